"""Round trips through CpuGpuTransfer: exact bytes, every layout, ratio and dtype, on CPU and
(when present) CUDA."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import kvoff
from _transfer_kv import DEVICES, LAYOUTS, TRITON_WARNING, all_blocks, make_kv, poison, slot_ref
from kvoff.transfer import CpuGpuTransfer, TransferResult

pytestmark = pytest.mark.filterwarnings(TRITON_WARNING)

GPU_BS = 16


def _tier_bytes(t: CpuGpuTransfer) -> list[torch.Tensor]:
    return [t.cpu_block(j).clone() for j in range(t.num_cpu_blocks)]


def _slot(t: CpuGpuTransfer, cpu_block: int, s: int) -> torch.Tensor:
    g = t.gpu_block_bytes
    view: torch.Tensor = t.cpu_block(cpu_block)[s * g : (s + 1) * g]
    return view


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ratio", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int8])
@pytest.mark.parametrize("slots_per_buffer", [3, 64])
@pytest.mark.parametrize("copier", ["auto", "torch"])
def test_store_then_load_round_trips_exact_bytes(
    device: str, layout: str, ratio: int, dtype: torch.dtype, slots_per_buffer: int, copier: str
) -> None:
    nb, ncpu = 24, 7
    kv, name = make_kv(layout, device=device, dtype=dtype, num_blocks=nb, seed=ratio)
    probe = CpuGpuTransfer(kv, GPU_BS, GPU_BS * ratio, 1, layout=name)
    staging = 2 * slots_per_buffer * probe.gpu_block_bytes
    t = CpuGpuTransfer(
        kv, GPU_BS, GPU_BS * ratio, ncpu, layout=name, staging_bytes=staging, copier=copier
    )
    assert t.layout == name and t.gpu_blocks_per_cpu_block == ratio
    want = {"torch": "torch", "auto": "host" if device == "cpu" else t.copier}[copier]
    assert t.copier == want
    assert t.cpu_block_bytes == ratio * t.gpu_block_bytes
    rng = np.random.default_rng(ratio)
    cpu_ids = rng.choice(ncpu, size=3, replace=False)
    gpu_ids = rng.choice(nb, size=3 * ratio, replace=False)
    original = all_blocks(kv, name, nb)
    tier_before = _tier_bytes(t)

    t.transfer_async(7, "GPU_to_CPU", gpu_ids, cpu_ids.tolist())
    (res,) = t.wait([7])
    assert res == TransferResult(
        7, True, 3 * ratio * t.gpu_block_bytes, res.transfer_time, "GPU_to_CPU"
    )
    for k, (j, s) in enumerate((j, s) for j in cpu_ids for s in range(ratio)):
        assert torch.equal(_slot(t, int(j), s), original[gpu_ids[k]])
    for j in sorted(set(range(ncpu)) - set(cpu_ids.tolist())):
        assert torch.equal(t.cpu_block(j), tier_before[j])
    # A store leaves the GPU side untouched.
    assert all(torch.equal(a, b) for a, b in zip(all_blocks(kv, name, nb), original, strict=True))

    # Load the same CPU blocks into other GPU blocks, over fresh garbage.
    dest = [b for b in rng.permutation(nb).tolist() if b not in set(gpu_ids.tolist())]
    dest += gpu_ids.tolist()
    dest = dest[: 3 * ratio]
    poison(kv, name, dest, seed=99)
    _sync(device)
    before_load = all_blocks(kv, name, nb)
    t.transfer_async(8, "CPU_to_GPU", np.asarray(dest, dtype=np.int64), cpu_ids)
    (res,) = t.wait([8])
    assert res.success and res.transfer_size == 3 * ratio * t.gpu_block_bytes
    after = all_blocks(kv, name, nb)
    for k, b in enumerate(dest):
        assert torch.equal(after[b], original[gpu_ids[k]])
    for b in set(range(nb)) - set(dest):
        assert torch.equal(after[b], before_load[b])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["blocks_first", "kv_split", "cross_layer"])
@pytest.mark.parametrize("copier", ["auto", "torch"])
def test_load_skips_into_first_cpu_block(device: str, layout: str, copier: str) -> None:
    ratio, nb = 4, 20
    kv, name = make_kv(layout, device=device, num_blocks=nb, seed=5)
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS * ratio, 5, layout=name, copier=copier)
    src = list(range(8, 20))  # 12 GPU blocks -> CPU blocks 3, 1, 4
    original = all_blocks(kv, name, nb)
    t.transfer_async(1, "GPU_to_CPU", src, [3, 1, 4])
    t.wait([1])
    for skip in (0, 1, 3):
        n = 12 - skip
        dest = list(range(n))
        poison(kv, name, list(range(nb)), seed=skip)
        _sync(device)
        before = all_blocks(kv, name, nb)
        t.transfer_async(2, "CPU_to_GPU", dest, [3, 1, 4])
        (res,) = t.wait([2])
        assert res.transfer_size == n * t.gpu_block_bytes
        after = all_blocks(kv, name, nb)
        for i, b in enumerate(dest):
            assert torch.equal(after[b], original[src[skip + i]])
        for b in range(n, nb):
            assert torch.equal(after[b], before[b])


@pytest.mark.parametrize("device", DEVICES)
def test_mapping_input_and_repeated_jobs(device: str) -> None:
    kv, _ = make_kv("blocks_first", device=device, num_blocks=10)
    assert isinstance(kv, list)
    named = {f"layer.{i}": x for i, x in enumerate(kv)}
    t = CpuGpuTransfer(named, GPU_BS, GPU_BS, 4)
    original = all_blocks(kv, "blocks_first", 10)
    for round_ in range(3):
        t.transfer_async(round_, "GPU_to_CPU", [round_, 9 - round_], [1, 2])
        t.wait([round_])
        assert torch.equal(_slot(t, 1, 0), original[round_])
        assert torch.equal(_slot(t, 2, 0), original[9 - round_])


@pytest.mark.parametrize("device", DEVICES)
def test_get_finished_returns_each_job_once_in_submission_order(device: str) -> None:
    kv, _ = make_kv("blocks_first", device=device, num_blocks=12)
    t = CpuGpuTransfer(kv, GPU_BS, 2 * GPU_BS, 6)
    g = t.gpu_block_bytes
    t.transfer_async(10, "GPU_to_CPU", [0, 1, 2, 3], [0, 1])
    t.transfer_async(11, "GPU_to_CPU", [4, 5], [2])
    t.transfer_async(12, "CPU_to_GPU", [6, 7, 8], [0, 1])
    _sync(device)
    results: list[TransferResult] = []
    deadline = time.monotonic() + 30
    while len(results) < 3 and time.monotonic() < deadline:
        results += t.get_finished()
    assert [(r.job_id, r.success, r.transfer_size, r.transfer_type) for r in results] == [
        (10, True, 4 * g, "GPU_to_CPU"),
        (11, True, 2 * g, "GPU_to_CPU"),
        (12, True, 3 * g, "CPU_to_GPU"),
    ]
    assert all(r.transfer_time > 0 for r in results)
    assert t.get_finished() == []
    assert list(t.in_flight()) == []


@pytest.mark.parametrize("device", DEVICES)
def test_wait_consumes_only_the_named_jobs(device: str) -> None:
    kv, _ = make_kv("kv_split", device=device, num_blocks=12)
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 6, layout="kv_split")
    t.transfer_async(1, "GPU_to_CPU", [0], [0])
    t.transfer_async(2, "GPU_to_CPU", [1], [1])
    t.transfer_async(3, "CPU_to_GPU", [2], [0])
    got = t.wait([3, 1])
    assert [r.job_id for r in got] == [3, 1]
    _sync(device)
    assert [r.job_id for r in t.get_finished()] == [2]
    with pytest.raises(kvoff.UnknownJobError, match="job 1 is not in flight"):
        t.wait([1])


@pytest.mark.parametrize("device", DEVICES)
def test_empty_job_completes_with_zero_bytes(device: str) -> None:
    kv, _ = make_kv("blocks_first", device=device, num_blocks=4)
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 2)
    t.transfer_async(5, "CPU_to_GPU", [], [])
    (res,) = t.wait([5])
    assert (res.job_id, res.success, res.transfer_size) == (5, True, 0)


def test_package_reexports() -> None:
    assert kvoff.CpuGpuTransfer is CpuGpuTransfer
    assert kvoff.TransferResult is TransferResult
    r = TransferResult(1, True, 2, 0.5, "GPU_to_CPU")
    with pytest.raises(AttributeError):
        r.success = False  # type: ignore[misc,unused-ignore]


def test_cpu_tier_is_allocated_in_whole_block_chunks() -> None:
    kv, _ = make_kv("blocks_first", device="cpu", num_blocks=8)
    probe = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 1)
    block = probe.cpu_block_bytes  # 3 layers x 64 bf16 = 384 bytes
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 10, pin_chunk_bytes=1024)
    tier = t._tier
    assert block == 384 and tier.blocks_per_chunk == 2  # 1024 // 384
    assert [c.numel() for c in tier.chunks] == [768] * 5
    assert not t.pinned and t.cpu_alloc_seconds >= 0
    # A run of CPU blocks 1..4 crosses chunk edges: it must still land exactly.
    original = all_blocks(kv, "blocks_first", 8)
    t.transfer_async(0, "GPU_to_CPU", [7, 6, 5, 4], [1, 2, 3, 4])
    t.wait([0])
    for j, b in zip([1, 2, 3, 4], [7, 6, 5, 4], strict=True):
        assert torch.equal(t.cpu_block(j), original[b])


# ------------------------------------------------------------------ CUDA only


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda_only
def test_cuda_tier_is_pinned_and_timing_is_within_wall_time() -> None:
    kv, name = make_kv("kv_split", device="cuda", num_blocks=64, block_shape=(16, 8, 64))
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 64, layout=name)
    assert t.pinned and t.cpu_block(0).is_pinned() and t.copier == "triton"
    for direction, job in (("GPU_to_CPU", 1), ("CPU_to_GPU", 2)):
        torch.cuda.synchronize()
        began = time.perf_counter()
        t.transfer_async(job, direction, list(range(32)), list(range(32)))
        (res,) = t.wait([job])
        wall = time.perf_counter() - began
        assert res.success and res.transfer_size == 32 * t.gpu_block_bytes
        assert 0 < res.transfer_time < wall


@pytest.mark.cuda
@cuda_only
def test_cuda_store_waits_for_compute_stream_and_get_finished_does_not_block() -> None:
    kv, _ = make_kv("blocks_first", device="cuda", num_blocks=8)
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 4)
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # type: ignore[no-untyped-call]  # ~0.1 s of GPU time on the compute stream
    assert isinstance(kv, list)
    for x in kv:
        x[3].fill_(7)  # written after the sleep, on the compute stream
    marker = torch.cuda.current_stream().record_event()
    t.transfer_async(1, "GPU_to_CPU", [3], [2])
    assert not marker.query(), "transfer_async waited for the compute stream"
    assert t.get_finished() == []  # the store cannot have run yet, and polling must not wait
    (res,) = t.wait([1])
    assert res.success
    sevens = [torch.full_like(x[3], 7).cpu().reshape(-1).view(torch.uint8) for x in kv]
    assert torch.equal(t.cpu_block(2), torch.cat(sevens))


@pytest.mark.cuda
@cuda_only
def test_cuda_load_is_ordered_after_compute_stream_writes() -> None:
    kv, name = make_kv("blocks_first", device="cuda", num_blocks=8, seed=3)
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 4)
    t.transfer_async(1, "GPU_to_CPU", [5], [0])
    t.wait([1])
    stored = t.cpu_block(0).clone()
    torch.cuda._sleep(200_000_000)  # type: ignore[no-untyped-call]
    assert isinstance(kv, list)
    for x in kv:
        x[2].fill_(3)  # the compute stream's last write to block 2 comes before the load
    t.transfer_async(2, "CPU_to_GPU", [2], [0])
    t.wait([2])
    torch.cuda.synchronize()
    assert torch.equal(slot_ref(kv, name, 2), stored)


@pytest.mark.cuda
@cuda_only
def test_cuda_stores_and_loads_run_together() -> None:
    kv, name = make_kv("kv_split", device="cuda", num_blocks=64, block_shape=(16, 8, 64))
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 64, layout=name)
    original = all_blocks(kv, name, 64)
    t.transfer_async(1, "GPU_to_CPU", list(range(32)), list(range(32)))
    t.wait([1])
    t.transfer_async(2, "GPU_to_CPU", list(range(32, 64)), list(range(32, 64)))
    t.transfer_async(3, "CPU_to_GPU", list(range(63, 31, -1)), list(range(32)))
    t.wait([2, 3])
    after = all_blocks(kv, name, 64)
    for j in range(32, 64):
        assert torch.equal(t.cpu_block(j), original[j])
    for i, b in enumerate(range(63, 31, -1)):
        assert torch.equal(after[b], original[i])


@pytest.mark.cuda
@cuda_only
def test_cuda_job_starts_after_the_previous_job_of_its_direction() -> None:
    # A job's timing is the link's time for it alone: it starts when the job before it in the
    # same direction has ended, even when its first piece is on the other stream.
    kv, name = make_kv("kv_split", device="cuda", num_blocks=64, block_shape=(16, 8, 64))
    slot = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 1, layout=name).gpu_block_bytes
    t = CpuGpuTransfer(kv, GPU_BS, GPU_BS, 64, layout=name, staging_bytes=2 * 8 * slot)
    original = all_blocks(kv, name, 64)
    torch.cuda.synchronize()
    jobs = {  # direction: (gpu ids, cpu ids) of its two jobs; the loads move the blocks
        "GPU_to_CPU": ((range(24), range(24)), (range(24, 40), range(24, 40))),
        "CPU_to_GPU": ((range(40, 64), range(24)), (range(16), range(24, 40))),
    }
    for base, (direction, pair) in enumerate(jobs.items()):
        ids = [10 * base + 1, 10 * base + 2]
        for jid, (gpu, cpu) in zip(ids, pair, strict=True):  # the first: 3 pieces
            t.transfer_async(jid, direction, list(gpu), list(cpu))
        first, second = (t._jobs[j] for j in ids)
        second.end.synchronize()
        assert first.end.elapsed_time(second.start) >= 0
        assert [r.success for r in t.wait(ids)] == [True, True]
    after = all_blocks(kv, name, 64)
    for i in range(24):
        assert torch.equal(after[40 + i], original[i])
    for i in range(16):
        assert torch.equal(after[i], original[24 + i])
