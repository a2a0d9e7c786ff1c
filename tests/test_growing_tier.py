"""The growing CPU tier as the scheduler side sees it: the manager's usable limit (ids at or
above it are never handed out, it only grows, up to the capacity), the gauge that shows it, the
scheduler raising it to the minimum that every rank reported ready, and a real worker whose tier
is pinned in the background while stores go on."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _connector_rig import CBS, GBS
from kvoff import JobTracker, OffloadingManager, StatsAccumulator
from kvoff.connector import OffloadingScheduler, OffloadingWorker, RequestStep, WorkerOutput
from kvoff.errors import InvalidArgumentError, InvalidStateError
from kvoff.transfer import CpuGpuTransfer, cpu_tier


def _gauges(acc: StatsAccumulator) -> tuple[int, int, int]:
    m = acc.take().to_dict()["manager"]
    return m["capacity_blocks"], m["resident_blocks"], m["pinned_blocks"]


def _ids(out: object) -> list[int]:
    assert out is not None
    return out.store_spec.block_ids.tolist()  # type: ignore[attr-defined]


# -- the manager -----------------------------------------------------------------------------


def test_ids_at_or_above_the_usable_limit_are_never_handed_out() -> None:
    acc = StatsAccumulator()
    m = OffloadingManager(6, block_size=CBS, stats=acc, usable_blocks=2)
    assert (m.capacity, m.usable_blocks, m.free, _gauges(acc)) == (6, 2, 2, (2, 0, 0))
    assert repr(m) == (
        "OffloadingManager(num_blocks=6, usable_blocks=2, block_size=8, policy='lru', "
        "resident=0, pinned=0)"
    )
    assert _ids(m.prepare_store([1, 2])) == [0, 1]
    assert m.prepare_store([3]) is None  # both pinned, nothing beyond the limit
    m.complete_store([1, 2])
    # Full at the limit: evict 1 rather than hand out id 2.
    out = m.prepare_store([3])
    assert (_ids(out), out.block_hashes_evicted) == ([0], [1])
    m.complete_store([3])
    assert _gauges(acc) == (2, 2, 0)
    m.set_usable_blocks(np.int64(4))
    assert (m.usable_blocks, m.free, _gauges(acc)) == (4, 2, (4, 2, 0))
    assert _ids(m.prepare_store([4, 5, 6])) == [2, 3, 1]
    m.set_usable_blocks(6)
    assert m.usable_blocks == 6
    assert repr(m).startswith("OffloadingManager(num_blocks=6, block_size=8")


def test_the_limit_never_shrinks_nor_passes_the_capacity_and_a_refusal_changes_nothing() -> None:
    acc = StatsAccumulator()
    m = OffloadingManager(6, block_size=CBS, stats=acc, usable_blocks=3)
    assert _ids(m.prepare_store([1, 2])) == [0, 1]
    before = (m.usable_blocks, m.free, m.resident, m.pinned, m.block_id(2))
    acc.take()
    with pytest.raises(
        InvalidStateError,
        match=re.escape(
            "usable_blocks only grows: it is 3, so 2 is refused (blocks once usable stay "
            "usable, and ids at or above 2 may be in use)"
        ),
    ):
        m.set_usable_blocks(2)
    with pytest.raises(
        InvalidArgumentError,
        match=re.escape("usable_blocks must be at most the capacity, 6 blocks, got 7"),
    ):
        m.set_usable_blocks(7)
    with pytest.raises(
        InvalidArgumentError, match="usable_blocks must be a non-negative int, got -1"
    ):
        m.set_usable_blocks(-1)
    with pytest.raises(InvalidArgumentError, match="usable_blocks must be an int, got bool"):
        m.set_usable_blocks(True)
    with pytest.raises(InvalidArgumentError, match="usable_blocks must be an int, got float"):
        m.set_usable_blocks(4.0)
    with pytest.raises(
        InvalidArgumentError,
        match=re.escape(f"usable_blocks must be an int in 0..=2^64-1, got {2**70}"),
    ):
        m.set_usable_blocks(2**70)
    assert (m.usable_blocks, m.free, m.resident, m.pinned, m.block_id(2)) == before
    # Refusals report nothing: the gauges are where the last successful call left them.
    assert acc.take().to_dict()["manager"]["capacity_blocks"] == 3
    m.set_usable_blocks(3)  # the same limit again is no change
    assert m.usable_blocks == 3


def test_a_starting_limit_beyond_the_capacity_is_refused() -> None:
    acc = StatsAccumulator()
    with pytest.raises(
        InvalidArgumentError,
        match=re.escape("usable_blocks must be at most the capacity, 4 blocks, got 5"),
    ):
        OffloadingManager(4, stats=acc, usable_blocks=5)
    with pytest.raises(InvalidArgumentError, match="usable_blocks must be a non-negative int"):
        OffloadingManager(4, usable_blocks=-3)
    assert acc.take().to_dict()["manager"]["capacity_blocks"] == 0  # nothing reported
    m = OffloadingManager(4, usable_blocks=0)
    assert (m.usable_blocks, m.free) == (0, 0)
    assert m.prepare_store([7]) is None and m.allocation_failures == 1


# -- the scheduler ---------------------------------------------------------------------------


def _scheduler(num_workers: int, capacity: int = 8) -> tuple[OffloadingScheduler, StatsAccumulator]:
    acc = StatsAccumulator()
    m = OffloadingManager(capacity, block_size=CBS, stats=acc, usable_blocks=0)
    return OffloadingScheduler(m, GBS, CBS, num_workers=num_workers, stats=acc), acc


def test_the_usable_limit_is_the_minimum_over_the_ranks() -> None:
    sched, acc = _scheduler(3)
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=4))
    sched.update_from_output(WorkerOutput(rank=2, ready_cpu_blocks=6))
    # Rank 1 has not reported: it holds nothing yet.
    assert (sched.usable_cpu_blocks, sched.ready_cpu_blocks()) == (0, {0: 4, 2: 6})
    sched.update_from_output(WorkerOutput(rank=1, ready_cpu_blocks=2))
    assert (sched.usable_cpu_blocks, _gauges(acc)[0]) == (2, 2)
    sched.update_from_output(WorkerOutput(rank=1, ready_cpu_blocks=8))
    assert sched.usable_cpu_blocks == 4  # rank 0's 4 is now the least
    sched.update_from_output(WorkerOutput(rank=0))  # not reported: nothing changes
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=12))  # beyond: capped
    assert (sched.usable_cpu_blocks, sched.ready_cpu_blocks()) == (6, {0: 12, 1: 8, 2: 6})
    assert _gauges(acc)[0] == 6


def test_a_bad_or_shrinking_count_is_refused_and_nothing_of_the_output_is_applied() -> None:
    sched, _ = _scheduler(1)
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=4))
    hashes = [10, 11, 12, 13]
    assert sched.get_num_new_matched_tokens("R", hashes, 17, 0) == 0
    sched.update_state_after_alloc("R", hashes, [0, 1, 2, 3], 0, 0)
    meta = sched.build_step([RequestStep("R", hashes, [0, 1, 2, 3], 17)])
    (store,) = meta.stores
    assert store.cpu_block_ids.tolist() == [0, 1]
    done = [(store.transfer_id, True)]
    with pytest.raises(
        InvalidStateError,
        match=re.escape(
            "rank 0 reported 3 ready CPU blocks after 4: a tier only grows (is this output "
            "stale, or from another worker?); nothing was applied"
        ),
    ):
        sched.update_from_output(WorkerOutput(done, rank=0, ready_cpu_blocks=3))
    for bad, shown in ((-1, "-1"), (True, "bool True"), (2.5, "float 2.5"), ("4", "str '4'")):
        with pytest.raises(
            InvalidArgumentError,
            match=re.escape(
                "rank 0: WorkerOutput.ready_cpu_blocks must be a non-negative int or None, "
                f"got {shown}; nothing was applied"
            ),
        ):
            sched.update_from_output(WorkerOutput(done, rank=0, ready_cpu_blocks=bad))
    # Nothing applied: the store is still in flight, the limit and the counts as they were.
    assert sched.num_transfers_in_flight == 1
    assert (sched.usable_cpu_blocks, sched.ready_cpu_blocks()) == (4, {0: 4})
    assert sched.manager.block_state(11) == -1
    sched.update_from_output(WorkerOutput(done, rank=0, ready_cpu_blocks=np.int64(5)))
    assert (sched.num_transfers_in_flight, sched.usable_cpu_blocks) == (0, 5)
    assert sched.manager.block_state(11) == 0


def test_a_store_refused_while_the_tier_grows_is_asked_again_once_there_is_room() -> None:
    sched, _ = _scheduler(2, capacity=4)
    hashes, gpu = [10, 11, 12, 13], [5, 6, 7, 8]
    assert sched.get_num_new_matched_tokens("R", hashes, 17, 0) == 0
    sched.update_state_after_alloc("R", hashes, gpu, 0, 0)
    step = RequestStep("R", hashes, gpu, 17)
    assert sched.build_step([step]).stores == []  # nothing usable yet
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=4))
    assert sched.build_step([step]).stores == []  # rank 1 has pinned nothing
    sched.update_from_output(WorkerOutput(rank=1, ready_cpu_blocks=1))
    assert sched.build_step([step]).stores == []  # room for one of the two blocks: all or none
    sched.update_from_output(WorkerOutput(rank=1, ready_cpu_blocks=2))
    (store,) = sched.build_step([step]).stores
    assert (store.gpu_block_ids.tolist(), store.cpu_block_ids.tolist()) == ([5, 6, 7, 8], [0, 1])
    assert sched.build_step([step]).stores == []  # stored: not asked again
    assert sched.manager.allocation_failures == 3


def test_once_the_tier_is_whole_a_refused_store_is_not_retried() -> None:
    sched, _ = _scheduler(1, capacity=2)
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=2))
    a, b = [1, 2, 3, 4, 5, 6], [21, 22, 23, 24, 25, 26]
    for req, hashes in (("A", a), ("B", b)):
        assert sched.get_num_new_matched_tokens(req, hashes, 25, 0) == 0
        sched.update_state_after_alloc(req, hashes, list(range(6)), 0, 0)
    # A's 3 CPU blocks can never fit a 2-block tier: refused once, then left alone.
    assert sched.build_step([RequestStep("A", a, list(range(6)), 25)]).stores == []
    assert sched.build_step([RequestStep("A", a, list(range(6)), 25)]).stores == []
    assert sched.manager.allocation_failures == 1


# Property: over any interleaving of growth reports, stores and completions, no store names a
# CPU block at or above the minimum every rank reported ready when its step was built.
_event = st.one_of(
    st.tuples(st.just("grow"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("store"), st.integers(1, 4)),
    st.tuples(st.just("complete")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_event, max_size=40), st.integers(1, 3))
def test_no_store_names_a_block_some_rank_has_not_pinned(events: list, num_workers: int) -> None:
    sched, acc = _scheduler(num_workers, capacity=10)
    ready = [0] * num_workers
    in_flight: list[int] = []
    next_hash = 1000
    for i, event in enumerate(events):
        if event[0] == "grow":
            rank = event[1] % num_workers
            ready[rank] = min(ready[rank] + event[2], 12)
            sched.update_from_output(WorkerOutput(rank=rank, ready_cpu_blocks=ready[rank]))
        elif event[0] == "complete":
            done = [(tid, True) for tid in in_flight]
            for rank in range(num_workers):
                sched.update_from_output(WorkerOutput(done, rank=rank))
            in_flight = []
        else:
            n, req = event[1], f"r{i}"
            hashes = list(range(next_hash, next_hash + 2 * n))
            next_hash += 2 * n
            gpu = list(range(2 * n))
            assert sched.get_num_new_matched_tokens(req, hashes, 4 * 2 * n + 1, 0) == 0
            sched.update_state_after_alloc(req, hashes, gpu, 0, 0)
            meta = sched.build_step([RequestStep(req, hashes, gpu, 4 * 2 * n + 1)])
            limit = min(min(ready), 10)
            assert sched.usable_cpu_blocks == limit
            for spec in meta.stores:
                ids = spec.cpu_block_ids.tolist()
                assert len(ids) == n and max(ids) < limit, (ids, ready)
                in_flight.append(spec.transfer_id)
        assert sched.manager.resident <= sched.usable_cpu_blocks
        assert acc.take().to_dict()["manager"]["capacity_blocks"] == sched.usable_cpu_blocks


# -- a real worker whose tier is pinned in the background --------------------------------------


def test_a_worker_reports_its_tier_growing_and_stores_use_only_ready_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = threading.Semaphore(0)
    real = cpu_tier.allocate_chunk

    def gated(nbytes: int, pin: bool, method: str = "alloc") -> torch.Tensor:
        assert gate.acquire(timeout=30), "the test never released this chunk"
        return real(nbytes, pin, method)

    monkeypatch.setattr(cpu_tier, "allocate_chunk", gated)
    kv = [torch.arange(2 * 16 * GBS * 8, dtype=torch.int16).view(2, 16, GBS, 8) + 7 * i
          for i in range(2)]  # fmt: skip
    probe_bytes = 2 * 2 * 2 * GBS * 8 * 2  # ratio 2 x (2 layers x K/V) x rows of 64 bytes
    transfer = CpuGpuTransfer(
        kv, GBS, CBS, 6, layout="kv_split", alloc_in_background=True,
        pin_chunk_bytes=2 * probe_bytes,
    )  # fmt: skip
    assert transfer.cpu_block_bytes == probe_bytes
    acc = StatsAccumulator()
    manager = OffloadingManager(6, block_size=CBS, stats=acc, usable_blocks=0)
    sched = OffloadingScheduler(manager, GBS, CBS, stats=acc)
    worker = OffloadingWorker(transfer, JobTracker(stats=acc))

    def step(req: str, hashes: list[int], gpu: list[int]) -> list[int]:
        assert sched.get_num_new_matched_tokens(req, hashes, GBS * len(hashes) + 1, 0) == 0
        sched.update_state_after_alloc(req, hashes, gpu, 0, 0)
        meta = sched.build_step([RequestStep(req, hashes, gpu, GBS * len(hashes) + 1)])
        worker.start_loads(meta)
        worker.submit_stores(meta)
        out = worker.get_finished()
        assert all(ok for _, ok in out.transfers)
        sched.update_from_output(out)
        return [j for s in meta.stores for j in s.cpu_block_ids.tolist()]

    sched.update_from_output(worker.get_finished())
    assert (sched.usable_cpu_blocks, _gauges(acc)[0]) == (0, 0)
    assert step("A", [1, 2, 3, 4], [0, 1, 2, 3]) == []  # nothing pinned: nothing stored
    gate.release()
    assert transfer.wait_cpu_blocks(2) == 2
    sched.update_from_output(worker.get_finished())
    assert (sched.usable_cpu_blocks, _gauges(acc)[0]) == (2, 2)
    assert step("B", [11, 12, 13, 14], [4, 5, 6, 7]) == [0, 1]
    gate.release(2)
    assert transfer.wait_cpu_blocks() == 6
    sched.update_from_output(worker.get_finished())
    assert step("C", [21, 22, 23, 24], [10, 11, 12, 13]) == [2, 3]
    assert (sched.usable_cpu_blocks, _gauges(acc)) == (6, (6, 4, 0))
    # What was stored is the bytes of the GPU blocks named, in the tier's block-major order.
    stored = transfer.cpu_block(2).view(torch.int16).view(2, 2, 2, GBS * 8)
    for slot, g in enumerate((10, 11)):
        for layer in range(2):
            for k in range(2):
                assert torch.equal(stored[slot, layer, k], kv[layer][k, g].flatten())


def test_metrics_show_the_usable_capacity_growing() -> None:
    from prometheus_client import CollectorRegistry

    from kvoff.metrics import OffloadPromMetrics

    sched, acc = _scheduler(2, capacity=8)
    reg = CollectorRegistry()
    exporter = OffloadPromMetrics(reg)

    def scraped() -> float | None:
        exporter.observe(acc.take())
        return reg.get_sample_value("kvoff_cpu_capacity_blocks", {"engine": "0"})

    assert scraped() == 0
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=4))
    sched.update_from_output(WorkerOutput(rank=1, ready_cpu_blocks=2))
    assert scraped() == 2
    assert scraped() == 2  # a gauge: kept across intervals
    sched.update_from_output(WorkerOutput(rank=1, ready_cpu_blocks=8))
    sched.update_from_output(WorkerOutput(rank=0, ready_cpu_blocks=8))
    assert scraped() == 8
