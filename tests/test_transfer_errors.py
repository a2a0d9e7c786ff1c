"""CpuGpuTransfer's refusals and failures: bad input raises before anything is enqueued and
changes nothing; a copy that raises comes back as success=False and loses nothing else."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import kvoff
from _transfer_kv import DEVICES, TRITON_WARNING, all_blocks, make_kv
from kvoff.errors import InvalidArgumentError, InvalidStateError
from kvoff.transfer import CpuGpuTransfer

pytestmark = pytest.mark.filterwarnings(TRITON_WARNING)

BS = 16


def _layers(n: int = 3, blocks: int = 8) -> list[torch.Tensor]:
    return [torch.zeros(blocks, 4, 8, dtype=torch.float16) for _ in range(n)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu_kv": "kv"}, "gpu_kv must be a tensor"),
        ({"gpu_kv": []}, "holds no tensors"),
        ({"gpu_kv": [torch.zeros(4, 2), 3]}, r"gpu_kv\[1\] is a int, not a tensor"),
        ({"gpu_kv": [torch.zeros(4, 2), torch.zeros(5, 2)]}, "same number of blocks"),
        ({"gpu_kv": [torch.zeros(4, 2, device="meta")]}, "expected a CUDA device"),
        ({"gpu_kv": [torch.zeros(0, 2)]}, "has no blocks"),
        ({"gpu_kv": [torch.zeros(4, 0)]}, "has empty blocks"),
        ({"gpu_kv": [torch.zeros(4, 2, 3).transpose(1, 2)]}, "must be contiguous"),
        ({"gpu_kv": [torch.zeros(5, 4)[:, :3].t()]}, "must be contiguous"),
        ({"gpu_kv": [torch.zeros(4, 6).as_strided((4, 6), (3, 1))]}, "blocks overlap"),
        ({"gpu_kv": [torch.zeros(2, 4, 8)] * 2}, "pass layout='kv_split'"),
        ({"gpu_kv": [torch.zeros(3, 4, 8)], "layout": "kv_split"}, "needs \\[2, num_blocks"),
        ({"gpu_kv": [torch.zeros(3, 4)] * 2, "layout": "cross_layer"}, "takes one tensor"),
        ({"gpu_kv": [torch.zeros(3, 4)], "layout": "rows"}, "unknown layout 'rows'"),
        ({"gpu_kv": [torch.zeros(4, 2)] * 2}, r"gpu_kv\[0\] and gpu_kv\[1\] overlap in memory"),
        ({"gpu_block_size": 0}, "gpu_block_size must be a positive integer, got 0"),
        ({"gpu_block_size": 2.0}, "gpu_block_size must be a positive integer"),
        ({"cpu_block_size": True}, "cpu_block_size must be a positive integer"),
        ({"cpu_block_size": 24}, r"cpu_block_size \(24\) must be a multiple"),
        ({"num_cpu_blocks": -1}, "num_cpu_blocks must be a positive integer, got -1"),
        ({"staging_bytes": 100}, "cannot hold one GPU block of 192 bytes"),
        ({"num_staging_buffers": 0}, "num_staging_buffers must be a positive integer"),
        ({"pin_method": "mlock"}, "unknown pin_method 'mlock'; expected 'alloc' or 'register'"),
        ({"max_copy_programs": 0}, "max_copy_programs must be a positive integer, got 0"),
        ({"copier": "cuda"}, "unknown copier 'cuda'"),
    ],
)
def test_constructor_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "gpu_kv": _layers(),
        "gpu_block_size": BS,
        "cpu_block_size": 2 * BS,
        "num_cpu_blocks": 4,
    }
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=message):
        CpuGpuTransfer(**args)


def test_triton_copier_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InvalidArgumentError, match="copier='triton' needs triton"):
        CpuGpuTransfer(_layers(), BS, BS, 2, copier="triton")


def test_errors_are_value_errors_too() -> None:
    with pytest.raises(ValueError, match="num_cpu_blocks"):
        CpuGpuTransfer(_layers(), BS, BS, 0)


def test_refuses_to_pickle() -> None:
    import pickle

    t = CpuGpuTransfer(_layers(), BS, BS, 2)
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("direction", "gpu", "cpu", "error", "message"),
    [
        ("GPU_to_CPU", [0, 1], [8], InvalidArgumentError, r"holds 8, outside \[0, 8\)"),
        ("GPU_to_CPU", [0, 16], [1], InvalidArgumentError, r"holds 16, outside \[0, 16\)"),
        ("GPU_to_CPU", [-1, 2], [1], InvalidArgumentError, r"holds -1, outside"),
        ("GPU_to_CPU", [0, 1, 2], [1], InvalidArgumentError, "needs 2 GPU block ids, got 3"),
        ("GPU_to_CPU", [0], [1], InvalidArgumentError, "needs 2 GPU block ids, got 1"),
        ("GPU_to_CPU", [0, 1, 2, 3], [1, 1], InvalidArgumentError, "repeats block 1"),
        ("CPU_to_GPU", [0, 1, 2], [1], InvalidArgumentError, r"needs 1\.\.2 GPU block ids"),
        ("CPU_to_GPU", [], [1], InvalidArgumentError, r"needs 1\.\.2 GPU block ids, got 0"),
        ("CPU_to_GPU", [4, 4], [1], InvalidArgumentError, "repeats block 4"),
        ("CPU_to_GPU", [[0, 1]], [1], InvalidArgumentError, "must be one-dimensional"),
        ("CPU_to_GPU", [0.0, 1.0], [1], InvalidArgumentError, "must hold integers"),
        ("sideways", [0, 1], [1], InvalidArgumentError, "unknown direction 'sideways'"),
    ],
)
def test_bad_ids_raise_before_anything_is_enqueued(
    device: str, direction: str, gpu: object, cpu: object, error: type, message: str
) -> None:
    kv, _ = make_kv("blocks_first", device=device, num_blocks=16)
    t = CpuGpuTransfer(kv, BS, 2 * BS, 8)
    tier = [t.cpu_block(j).clone() for j in range(8)]
    gpu_before = all_blocks(kv, "blocks_first", 16)
    with pytest.raises(error, match=message):
        t.transfer_async(1, direction, gpu, cpu)
    assert list(t.in_flight()) == [] and t.get_finished() == []
    assert all(torch.equal(t.cpu_block(j), tier[j]) for j in range(8))
    assert all(
        torch.equal(a, b)
        for a, b in zip(all_blocks(kv, "blocks_first", 16), gpu_before, strict=True)
    )
    # The refused id is free, and the engine still works.
    t.transfer_async(1, "GPU_to_CPU", [3, 4], [0])
    (res,) = t.wait([1])
    assert res.success
    assert torch.equal(t.cpu_block(0), torch.cat([gpu_before[3], gpu_before[4]]))


@pytest.mark.parametrize("device", DEVICES)
def test_job_id_in_flight_is_refused_until_collected(device: str) -> None:
    kv, _ = make_kv("blocks_first", device=device, num_blocks=4)
    t = CpuGpuTransfer(kv, BS, BS, 4)
    t.transfer_async(3, "GPU_to_CPU", [0], [0])
    with pytest.raises(InvalidStateError, match="job 3 is already in flight"):
        t.transfer_async(3, "GPU_to_CPU", [1], [1])
    with pytest.raises(InvalidArgumentError, match="job_id must be an integer"):
        t.transfer_async(True, "GPU_to_CPU", [1], [1])  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(InvalidArgumentError, match="job_id must be an integer, got str"):
        t.transfer_async("4", "GPU_to_CPU", [1], [1])  # type: ignore[arg-type,unused-ignore]
    assert list(t.in_flight()) == [3]
    t.wait([3])
    t.transfer_async(3, "GPU_to_CPU", [1], [1])
    assert [r.job_id for r in t.wait([3])] == [3]


@pytest.mark.parametrize("device", DEVICES)
def test_wait_with_unknown_or_repeated_ids_consumes_nothing(device: str) -> None:
    kv, _ = make_kv("blocks_first", device=device, num_blocks=4)
    t = CpuGpuTransfer(kv, BS, BS, 4)
    t.transfer_async(1, "GPU_to_CPU", [0], [0])
    with pytest.raises(kvoff.UnknownJobError, match="job 2 is not in flight"):
        t.wait([1, 2])
    with pytest.raises(InvalidArgumentError, match="repeat"):
        t.wait([1, 1])
    assert list(t.in_flight()) == [1]
    assert [r.job_id for r in t.wait([1])] == [1]


class _Boom(RuntimeError):
    pass


def _fail_on_call(
    t: CpuGpuTransfer, store: bool, nth: int, monkeypatch: pytest.MonkeyPatch
) -> dict[str, int]:
    """Make the ``nth`` copy step of the job's direction raise: a staged pipeline's gather
    (store) or scatter (load) of one piece, or the host copier's copy of one run."""
    calls = {"n": 0}
    if t.copier == "host":
        host = t._host
        assert host is not None
        real_rows = host.copy_rows

        def flaky_rows(store_: bool, ids: Any, chunk: int, slots: Any) -> None:
            if store_ == store:
                calls["n"] += 1
                if calls["n"] == nth:
                    raise _Boom("injected copy failure")
            real_rows(store_, ids, chunk, slots)

        monkeypatch.setattr(host, "copy_rows", flaky_rows)
        return calls
    method = "gather" if store else "scatter"
    real = getattr(t._copier, method)

    def flaky(
        ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any = None
    ) -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            raise _Boom("injected copy failure")
        real(ids, first, count, staging, stream)

    monkeypatch.setattr(t._copier, method, flaky)
    return calls


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["GPU_to_CPU", "CPU_to_GPU"])
@pytest.mark.parametrize("copier", ["auto", "torch"])
def test_a_copy_that_raises_fails_only_its_job(
    device: str, direction: str, copier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = 24
    kv, _ = make_kv("kv_split", device=device, num_blocks=nb, seed=4)
    probe = CpuGpuTransfer(kv, BS, BS, 1, layout="kv_split")
    # Two slots per buffer: a 6-block job is three pieces, the second one fails. The host
    # copier has no pieces: CPU ids in two runs of three make two copies, the second fails.
    t = CpuGpuTransfer(
        kv, BS, BS, 12, layout="kv_split", staging_bytes=4 * probe.gpu_block_bytes, copier=copier
    )
    g = t.gpu_block_bytes
    original = all_blocks(kv, "kv_split", nb)
    t.transfer_async(1, "GPU_to_CPU", list(range(6)), list(range(6)))
    t.wait([1])
    calls = _fail_on_call(t, direction == "GPU_to_CPU", 2, monkeypatch)
    if direction == "GPU_to_CPU":
        t.transfer_async(2, direction, list(range(12, 18)), [9, 10, 11, 6, 7, 8])
    else:
        t.transfer_async(2, direction, list(range(12, 18)), [3, 4, 5, 0, 1, 2])
    # the job that did not fail, in the other direction, is unaffected
    other = "CPU_to_GPU" if direction == "GPU_to_CPU" else "GPU_to_CPU"
    if other == "CPU_to_GPU":
        t.transfer_async(3, other, list(range(18, 24)), list(range(6)))
    else:
        t.transfer_async(3, other, list(range(18, 24)), list(range(6, 12)))
    bad, good = t.wait([2, 3])
    assert (bad.job_id, bad.success, bad.transfer_size, bad.transfer_time) == (2, False, 6 * g, 0.0)
    assert bad.transfer_type == direction
    assert good.success and good.transfer_size == 6 * g
    assert calls["n"] == 2  # the failed job stopped at its failing piece (or run)
    now = all_blocks(kv, "kv_split", nb)
    if other == "CPU_to_GPU":
        assert all(torch.equal(now[18 + i], original[i]) for i in range(6))
    else:
        assert all(torch.equal(t.cpu_block(6 + i), original[18 + i]) for i in range(6))
    original = now
    # The staging buffers are free again: the same direction works, with exact bytes.
    monkeypatch.undo()
    if direction == "GPU_to_CPU":
        t.transfer_async(4, direction, [20, 21, 22, 23, 8, 9], [6, 7, 8, 9, 10, 11])
        assert t.wait([4])[0].success
        for j, b in zip(range(6, 12), [20, 21, 22, 23, 8, 9], strict=True):
            assert torch.equal(t.cpu_block(j), original[b])
    else:
        t.transfer_async(4, direction, [12, 13, 14, 15, 16, 17], [5, 4, 3, 2, 1, 0])
        assert t.wait([4])[0].success
        after = all_blocks(kv, "kv_split", nb)
        for b, src in zip(range(12, 18), [5, 4, 3, 2, 1, 0], strict=True):
            assert torch.equal(after[b], original[src])
    for j in range(6):  # what job 1 stored is intact
        assert torch.equal(t.cpu_block(j), original[j])


def test_ids_accept_numpy_unsigned_and_torch_cpu_tensors() -> None:
    kv, _ = make_kv("blocks_first", device="cpu", num_blocks=8)
    t = CpuGpuTransfer(kv, BS, BS, 4)
    t.transfer_async(1, "GPU_to_CPU", np.array([5, 6], dtype=np.uint32), torch.tensor([2, 3]))
    assert t.wait([1])[0].transfer_size == 2 * t.gpu_block_bytes


@pytest.mark.parametrize(
    ("job_ids", "message"),
    [
        (5, "job_ids must be an iterable of job ids, got int 5"),
        (None, "job_ids must be an iterable of job ids, got NoneType None"),
        ([None], r"job_ids\[0\] must be a job id \(an integer\), got NoneType None"),
        ([1, [1]], r"job_ids\[1\] must be a job id \(an integer\), got list \[1\]"),
        ([True], r"job_ids\[0\] must be a job id \(an integer\), got bool True"),
        ("1", r"job_ids\[0\] must be a job id \(an integer\), got str '1'"),
    ],
)
def test_wait_refuses_what_is_not_job_ids_and_consumes_nothing(
    job_ids: object, message: str
) -> None:
    kv, _ = make_kv("blocks_first", device="cpu", num_blocks=4)
    t = CpuGpuTransfer(kv, BS, BS, 4)
    t.transfer_async(1, "GPU_to_CPU", [0], [0])
    with pytest.raises(InvalidArgumentError, match=message):
        t.wait(job_ids)  # type: ignore[arg-type]
    assert list(t.in_flight()) == [1]
    assert [r.job_id for r in t.wait(np.array([1]))] == [1]


def _storage(rows: int) -> torch.Tensor:
    return torch.zeros(rows, 4, 8, dtype=torch.float16)  # 64-byte rows


def _overlapping_layouts() -> list[object]:
    base = _storage(17)
    wide = torch.zeros(8, 3, 32, dtype=torch.float16)  # rows interleave three 64-byte parts
    strided = _storage(34)
    kv = torch.zeros(17 * 32, dtype=torch.float16).as_strided((2, 16, 4, 8), (32, 32, 8, 1))
    return [
        pytest.param([base[0:16], base[1:17]], r"gpu_kv\[0\] and gpu_kv\[1\]", id="shifted"),
        pytest.param(
            [_storage(16), base[0:16], base[1:17]], r"gpu_kv\[1\] and gpu_kv\[2\]", id="third"
        ),
        pytest.param(
            {"k": base[0:16], "v": base[1:17]}, "gpu_kv\\['k'\\] and gpu_kv\\['v'\\]", id="map"
        ),
        pytest.param(
            [wide[:, 0:2], wide[:, 1:3]], r"gpu_kv\[0\] and gpu_kv\[1\]", id="interleaved"
        ),
        pytest.param(
            [strided[0:32:2], strided[2:34:2]],  # rows 0, 2, ... and 2, 4, ...
            r"gpu_kv\[0\] and gpu_kv\[1\]",
            id="same-stride-rows",
        ),
        pytest.param([kv], r"gpu_kv\[0\]\[0\] and gpu_kv\[0\]\[1\]", id="k-and-v"),
    ]


@pytest.mark.parametrize(("gpu_kv", "message"), _overlapping_layouts())
def test_layers_whose_bytes_overlap_are_refused(gpu_kv: object, message: str) -> None:
    layout = "kv_split" if isinstance(gpu_kv, list) and gpu_kv[0].dim() == 4 else "blocks_first"
    with pytest.raises(InvalidArgumentError, match=message + " overlap in memory"):
        CpuGpuTransfer(gpu_kv, BS, BS, 2, layout=layout)


def test_overlap_with_different_strides_is_refused() -> None:
    base = _storage(66)
    every_other = base[0:32:2]  # rows 0, 2, ..., 30
    every_fourth = base[2:66:4]  # rows 2, 6, ..., 62: rows 2..30 of them are the other's
    with pytest.raises(InvalidArgumentError, match=r"gpu_kv\[0\] and gpu_kv\[1\] overlap"):
        CpuGpuTransfer([every_other, every_fourth], BS, BS, 2)
    odd_fourth = base[1:65:4]  # rows 1, 5, ...: between the other's rows, sharing no byte
    CpuGpuTransfer([every_other, odd_fourth], BS, BS, 2)


def test_interleaved_layers_that_share_no_byte_are_accepted_and_copy_exactly() -> None:
    # One allocation [blocks, layers, 64 B] with a layer view per layer: rows interleave.
    base = torch.arange(8 * 3 * 32, dtype=torch.int16).view(torch.float16).view(8, 3, 4, 8)
    layers = [base[:, i] for i in range(3)]
    t = CpuGpuTransfer(layers, BS, BS, 4)
    t.transfer_async(1, "GPU_to_CPU", [5, 2], [0, 1])
    assert t.wait([1])[0].success
    for j, b in ((0, 5), (1, 2)):
        want = torch.cat([layer[b].reshape(-1).view(torch.uint8) for layer in layers])
        assert torch.equal(t.cpu_block(j), want)


def test_a_tier_larger_than_physical_memory_is_refused_up_front() -> None:
    from kvoff._sysmem import physical_memory_bytes

    phys = physical_memory_bytes()
    assert phys is not None  # Linux says
    block = 3 * 64  # three layers of 64-byte blocks
    blocks = phys // block + 1
    with pytest.raises(
        InvalidArgumentError,
        match=rf"the CPU tier needs {blocks * block} bytes \(\d+\.\d\d GiB: {blocks} blocks of "
        rf"{block} bytes\), more than this machine's physical memory, {phys} bytes",
    ):
        CpuGpuTransfer(_layers(), BS, BS, blocks)


def test_a_tier_of_exactly_physical_memory_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvoff.transfer.engine as engine

    block = 3 * 64 * 2  # two GPU blocks per CPU block
    monkeypatch.setattr(engine, "physical_memory_bytes", lambda: 2 * block)
    assert CpuGpuTransfer(_layers(), BS, 2 * BS, 2).num_cpu_blocks == 2
    with pytest.raises(InvalidArgumentError, match=r"needs 1152 bytes .* 768 bytes"):
        CpuGpuTransfer(_layers(), BS, 2 * BS, 3)
    monkeypatch.setattr(engine, "physical_memory_bytes", lambda: None)  # the OS does not say
    assert CpuGpuTransfer(_layers(), BS, 2 * BS, 3).num_cpu_blocks == 3
