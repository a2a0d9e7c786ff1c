"""kvoff's OffloadingWorker over vLLM's canonical caches, on CPU tensors: exact bytes, vLLM's
TransferResult, ``wait``, and the layouts it refuses."""

from __future__ import annotations

import time

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

import torch
from vllm.v1.kv_offload.base import (
    CanonicalKVCacheRef,
    CanonicalKVCaches,
    CanonicalKVCacheTensor,
    GPULoadStoreSpec,
    TransferResult,
)
from vllm.v1.kv_offload.cpu.common import CPULoadStoreSpec

from kvoff.errors import InvalidArgumentError
from kvoff.vllm.worker import KvoffOffloadingWorker

BLOCKS, PAGE = 16, 256


def caches(groups: int = 1, stride: int = PAGE) -> tuple[CanonicalKVCaches, list[torch.Tensor]]:
    """Two canonical tensors; the second has rows ``stride`` bytes apart (padded blocks)."""
    base = [torch.arange(BLOCKS * PAGE, dtype=torch.int32).to(torch.int8).view(BLOCKS, PAGE)]
    padded = torch.randint(-128, 127, (BLOCKS, stride), dtype=torch.int8)
    base.append(padded[:, :PAGE])
    tensors = [CanonicalKVCacheTensor(t, PAGE) for t in base]
    refs = [[CanonicalKVCacheRef(0, PAGE), CanonicalKVCacheRef(1, PAGE)] for _ in range(groups)]
    return CanonicalKVCaches(tensors, refs), base


def gpu(ids: list[int], sizes: list[int], starts: list[int]) -> GPULoadStoreSpec:
    return GPULoadStoreSpec(ids, group_sizes=sizes, block_indices=starts)


def rows(ts: list[torch.Tensor], ids: list[int]) -> list[torch.Tensor]:
    return [t[i].clone() for i in ids for t in ts]


@pytest.mark.parametrize("stride", [PAGE, PAGE + 64])
def test_store_then_load_round_trips_bytes(stride: int) -> None:
    kv, ts = caches(stride=stride)
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=2, num_chunks=4, copier="torch")
    before = rows(ts, [3, 5, 7, 9])
    assert w.submit_store(7, gpu([3, 5, 7, 9], [4], [0]), CPULoadStoreSpec([2, 0]))
    (res,) = w.get_finished()
    assert (res.job_id, res.success, res.transfer_size) == (7, True, 4 * 2 * PAGE)
    assert isinstance(res, TransferResult) and res.transfer_time >= 0.0
    # Load the last three blocks of those two chunks (the first is skipped) elsewhere.
    assert w.submit_load(8, CPULoadStoreSpec([2, 0]), gpu([10, 11, 12], [3], [1]))
    (res,) = w.get_finished()
    assert (res.job_id, res.success, res.transfer_size) == (8, True, 3 * 2 * PAGE)
    after = rows(ts, [10, 11, 12])
    for a, b in zip(after, before[2:], strict=True):
        assert torch.equal(a, b)
    snap = w.stats.take().to_dict()["transfers"]
    assert (snap["GPU_to_CPU"]["ops"], snap["GPU_to_CPU"]["bytes"]) == (1, 4 * 2 * PAGE)
    assert (snap["CPU_to_GPU"]["ops"], snap["CPU_to_GPU"]["blocks"]) == (1, 3)


def test_wait_then_get_finished_reports_each_job_once() -> None:
    kv, _ = caches()
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=1, num_chunks=4, copier="torch")
    w.submit_store(1, gpu([0, 1], [2], [0]), CPULoadStoreSpec([0, 1]))
    w.submit_store(2, gpu([2], [1], [0]), CPULoadStoreSpec([2]))
    w.wait({1, 99})  # an id not in flight is ignored, as vLLM's worker ignores it
    results = w.get_finished()
    assert sorted(r.job_id for r in results) == [1, 2]
    assert w.get_finished() == []


def test_a_job_over_two_groups_is_one_result() -> None:
    kv, ts = caches(groups=2)
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=1, num_chunks=4, copier="torch")
    want = rows(ts, [4, 6, 8])
    w.submit_store(3, gpu([4, 6, 8], [2, 1], [0, 0]), CPULoadStoreSpec([0, 1, 2]))
    (res,) = w.get_finished()
    assert (res.job_id, res.success, res.transfer_size) == (3, True, 3 * 2 * PAGE)
    w.submit_load(4, CPULoadStoreSpec([0, 1, 2]), gpu([13, 14, 15], [1, 2], [0, 0]))
    (res,) = w.get_finished()
    assert res.job_id == 4
    for a, b in zip(rows(ts, [13, 14, 15]), want, strict=True):
        assert torch.equal(a, b)


def test_group_over_part_of_the_tensors_is_refused() -> None:
    kv, _ = caches(groups=2)
    kv.group_data_refs[1] = [CanonicalKVCacheRef(1, PAGE)]
    with pytest.raises(InvalidArgumentError, match=r"group 1 uses tensors \[1\] of 2"):
        KvoffOffloadingWorker(kv, blocks_per_chunk=1, num_chunks=4)


@pytest.mark.parametrize(
    ("store", "sizes", "starts", "message"),
    [
        (True, [3], [0], "covers part of a 2-block chunk"),
        (True, [2], [1], "covers part of a 2-block chunk"),
        (False, [3], [0], "ends inside a 2-block chunk"),
    ],
)
def test_partial_chunks_kvoff_cannot_express_are_refused(
    store: bool, sizes: list[int], starts: list[int], message: str
) -> None:
    kv, _ = caches()
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=2, num_chunks=4, copier="torch")
    ids = list(range(sizes[0]))
    cpu = CPULoadStoreSpec(list(range(-(-(sizes[0] + starts[0] % 2) // 2))))
    with pytest.raises(InvalidArgumentError, match=message):
        if store:
            w.submit_store(1, gpu(ids, sizes, starts), cpu)
        else:
            w.submit_load(1, cpu, gpu(ids, sizes, starts))
    assert w.get_finished() == []  # nothing was submitted


@pytest.mark.parametrize("groups", [1, 2])
def test_transfer_result_size_is_blocks_times_pages_and_time_is_within_the_wall_clock(
    groups: int,
) -> None:
    kv, _ = caches(groups=groups)
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=1, num_chunks=8, copier="torch")
    sizes = [3] if groups == 1 else [2, 1]  # two groups: two engine jobs, one vLLM result
    for job_id, (submit, spec_pair) in enumerate(
        [
            (w.submit_store, (gpu([1, 2, 3], sizes, [0] * groups), CPULoadStoreSpec([5, 6, 7]))),
            (w.submit_load, (CPULoadStoreSpec([5, 6, 7]), gpu([9, 10, 11], sizes, [0] * groups))),
        ]
    ):
        start = time.perf_counter()
        assert submit(job_id, *spec_pair)
        (res,) = w.get_finished()
        wall = time.perf_counter() - start
        # Both canonical tensors hold a PAGE-byte row per block.
        assert (res.job_id, res.success, res.transfer_size) == (job_id, True, 3 * 2 * PAGE)
        assert 0.0 < res.transfer_time <= wall


def test_failed_job_reports_its_size_and_no_time() -> None:
    kv, _ = caches()
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=1, num_chunks=4)  # host copier on CPU
    host = w.engine._host
    assert host is not None

    def failing(plan: object, store: bool) -> None:
        raise RuntimeError("injected copy failure")

    host.run_job = failing  # type: ignore[method-assign]
    assert w.submit_store(4, gpu([0, 1], [2], [0]), CPULoadStoreSpec([0, 1]))
    (res,) = w.get_finished()
    assert (res.job_id, res.success, res.transfer_size, res.transfer_time) == (
        4,
        False,
        2 * 2 * PAGE,
        0.0,
    )
    snap = w.stats.take().to_dict()["transfers"]["GPU_to_CPU"]
    assert (snap["ops"], snap["failed_ops"], snap["failed_bytes"]) == (0, 1, 2 * 2 * PAGE)


def test_wait_takes_jobs_out_of_flight_before_get_finished_reports_them() -> None:
    # What vLLM's preemption flush relies on: after wait(ids) those jobs' copies are done.
    kv, _ = caches()
    w = KvoffOffloadingWorker(kv, blocks_per_chunk=1, num_chunks=4, copier="torch")
    w.submit_store(1, gpu([0, 1], [2], [0]), CPULoadStoreSpec([0, 1]))
    w.submit_load(2, CPULoadStoreSpec([0]), gpu([5], [1], [0]))
    assert w.in_flight() == {1, 2}
    w.wait({1})
    assert w.in_flight() == {2}
    assert sorted(r.job_id for r in w.get_finished()) == [1, 2]
    assert w.in_flight() == set()
