"""The worker half's guarantees: a raising ``on_result`` callback loses no result, and a
transfer is never issued twice (a ``StepMetadata`` submitted again is refused whole)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from _connector_rig import (
    A_HASHES,
    A_IDS,
    B_HASHES,
    B_IDS,
    NUM_CPU_BLOCKS,
    Rig,
    assert_same_block,
    store_a,
)
from kvoff import InvalidArgumentError, InvalidStateError, JobTracker
from kvoff.connector import LOAD, STORE, RequestStep, StepMetadata, TransferSpec, WorkerOutput
from kvoff.transfer import TransferResult

D_HASHES, D_IDS = [400, 401], [33, 34, 35]  # 9 tokens: one full CPU block (GPU 33, 34)

# Every output carries the tier's ready count: the whole tier, allocated up front.
READY = NUM_CPU_BLOCKS


class _CallbackBug(RuntimeError):
    pass


class FlakyCallback:
    """Records every result it is given and raises on the calls numbered in ``fail_on``."""

    def __init__(self, *fail_on: int) -> None:
        self.fail_on = set(fail_on)
        self.seen: list[int] = []

    def __call__(self, result: TransferResult) -> None:
        self.seen.append(result.job_id)
        if len(self.seen) in self.fail_on:
            raise _CallbackBug(f"callback bug on job {result.job_id}")


def test_a_raising_callback_loses_no_load_and_the_blocks_are_unpinned() -> None:
    cb = FlakyCallback(2)  # the load's result (job 1); the store (job 0) goes through
    rig = Rig(on_result=cb)
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    assert rig.manager.pinned == 4
    meta = rig.sched.build_step([])
    rig.worker.start_loads(meta)
    with pytest.raises(_CallbackBug, match="callback bug on job 1"):
        rig.worker.get_finished()
    assert cb.seen == [0, 1]
    assert rig.manager.pinned == 4  # nothing reported to the scheduler yet
    out = rig.worker.get_finished()
    assert out == WorkerOutput(
        transfers=[(1, True)], finished_loading=["B"], ready_cpu_blocks=READY
    )
    assert cb.seen == [0, 1]  # each result is given to the callback once
    rig.sched.update_from_output(out)
    assert rig.manager.pinned == 0
    assert rig.sched.num_transfers_in_flight == 0
    assert rig.worker.get_finished() == WorkerOutput(ready_cpu_blocks=READY)
    for a, b in zip(A_IDS[:8], B_IDS[:8], strict=True):
        assert_same_block(rig, b, a)
    r = rig.stats.take().reduce()
    assert (r["GPU_to_CPU_ops"], r["CPU_to_GPU_ops"]) == (1, 1)  # recorded once each


def test_every_result_of_a_poll_survives_and_merges_into_the_next_output() -> None:
    cb = FlakyCallback(1)  # the first of two results in one poll raises
    rig = Rig(on_result=cb)
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    assert rig.admit("D", D_HASHES, D_IDS, 9) == 0
    meta = rig.sched.build_step(
        [RequestStep("A", A_HASHES, A_IDS, 33), RequestStep("D", D_HASHES, D_IDS, 9)]
    )
    assert [s.transfer_id for s in meta.stores] == [0, 1]
    rig.worker.submit_stores(meta)
    with pytest.raises(_CallbackBug, match="callback bug on job 0"):
        rig.worker.get_finished(["A"])
    assert cb.seen == [0, 1]  # the callback still saw the second result
    assert rig.sched.request_finished("A") is True  # A's store is not reported yet
    assert rig.manager.block_state(101) == -1
    assert rig.manager.lookup([101]) == 0  # nothing of A is loadable before the report
    out = rig.worker.get_finished()
    assert out == WorkerOutput(
        transfers=[(0, True), (1, True)], finished_storing=["A"], ready_cpu_blocks=READY
    )
    rig.sched.update_from_output(out)
    assert rig.sched.take_freeable() == ["A"]
    assert [rig.manager.block_state(h) for h in (101, 103, 105, 107, 401)] == [0] * 5
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    rig.worker.start_loads(rig.sched.build_step([]))
    assert rig.worker.get_finished() == WorkerOutput(
        transfers=[(2, True)], finished_loading=["B"], ready_cpu_blocks=READY
    )
    assert cb.seen == [0, 1, 2]


def test_undelivered_output_and_new_results_come_back_together() -> None:
    cb = FlakyCallback(2)
    rig = Rig(on_result=cb)
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    rig.worker.start_loads(rig.sched.build_step([]))
    with pytest.raises(_CallbackBug):
        rig.worker.get_finished()
    # D stores before the next poll: that poll reports B's load and D's store.
    assert rig.admit("D", D_HASHES, D_IDS, 9) == 0
    rig.worker.submit_stores(rig.sched.build_step([RequestStep("D", D_HASHES, D_IDS, 9)]))
    out = rig.worker.get_finished(["D"])
    assert out == WorkerOutput(
        transfers=[(1, True), (2, True)],
        finished_storing=["D"],
        finished_loading=["B"],
        ready_cpu_blocks=READY,
    )
    rig.sched.update_from_output(out)
    assert (rig.manager.pinned, rig.sched.num_transfers_in_flight) == (0, 0)
    assert cb.seen == [0, 1, 2]


def _loaded_rig() -> tuple[Rig, StepMetadata]:
    rig = Rig()
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    meta = rig.sched.build_step([])
    assert [s.transfer_id for s in meta.loads] == [1]
    return rig, meta


def test_start_loads_twice_is_refused_before_anything_is_issued() -> None:
    rig, meta = _loaded_rig()
    rig.worker.start_loads(meta)
    assert list(rig.transfers[0].in_flight()) == [1]
    with pytest.raises(
        InvalidStateError,
        match=r"transfer 1 \(CPU_to_GPU, request 'B'\) is not newer than transfer 1, the last "
        r"CPU_to_GPU transfer submitted to this worker",
    ):
        rig.worker.start_loads(meta)
    assert list(rig.transfers[0].in_flight()) == [1]
    assert (rig.worker.num_jobs_in_flight, rig.worker.tracker.num_pending) == (1, 1)
    out = rig.worker.get_finished()
    assert out == WorkerOutput(
        transfers=[(1, True)], finished_loading=["B"], ready_cpu_blocks=READY
    )
    rig.sched.update_from_output(out)
    assert rig.manager.pinned == 0
    # Once reported, the id is still refused: the scheduler would see it twice.
    with pytest.raises(InvalidStateError, match=r"transfer 1 .* is not newer than transfer 1"):
        rig.worker.start_loads(meta)
    assert rig.worker.get_finished() == WorkerOutput(ready_cpu_blocks=READY)
    assert rig.stats.take().reduce()["CPU_to_GPU_ops"] == 1


def test_submit_stores_twice_is_refused_before_anything_is_issued() -> None:
    rig = Rig()
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    rig.worker.submit_stores(meta)
    with pytest.raises(
        InvalidStateError, match=r"transfer 0 \(GPU_to_CPU, request 'A'\) is not newer"
    ):
        rig.worker.submit_stores(meta)
    assert (rig.worker.num_jobs_in_flight, rig.worker.tracker.num_pending) == (1, 1)
    out = rig.worker.get_finished()
    assert out.transfers == [(0, True)]
    rig.sched.update_from_output(out)
    assert rig.manager.block_state(107) == 0
    assert rig.stats.take().reduce()["GPU_to_CPU_ops"] == 1


def test_a_metadata_naming_a_transfer_twice_issues_none_of_it() -> None:
    rig, meta = _loaded_rig()
    (load,) = meta.loads
    again = TransferSpec(1, "C", LOAD, np.array([22, 23]), np.array([3]))
    with pytest.raises(InvalidStateError, match=r"transfer 1 \(CPU_to_GPU, request 'C'\)"):
        rig.worker.start_loads(StepMetadata(loads=[load, again]))
    assert (rig.worker.num_jobs_in_flight, rig.worker.tracker.num_pending) == (0, 0)
    assert list(rig.transfers[0].in_flight()) == []
    rig.worker.start_loads(meta)  # the genuine submission still works
    assert rig.worker.get_finished().transfers == [(1, True)]


def test_a_transfer_id_in_flight_in_the_other_direction_is_refused() -> None:
    rig = Rig()
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    rig.worker.submit_stores(meta)
    clash = TransferSpec(0, "B", LOAD, np.array([10, 11]), np.array([0]))
    with pytest.raises(InvalidStateError, match="transfer 0 is already in flight on this worker"):
        rig.worker.start_loads(StepMetadata(loads=[clash]))
    assert (rig.worker.num_jobs_in_flight, rig.worker.tracker.num_pending) == (1, 1)
    assert rig.worker.get_finished().transfers == [(0, True)]


def test_a_spec_in_the_wrong_list_is_refused() -> None:
    rig = Rig()
    store = TransferSpec(0, "A", STORE, np.array([3, 9]), np.array([0]))
    with pytest.raises(InvalidArgumentError, match="start_loads got transfer 0 of direction"):
        rig.worker.start_loads(StepMetadata(loads=[store]))
    with pytest.raises(InvalidArgumentError, match="submit_stores got transfer 0 of direction"):
        rig.worker.submit_stores(StepMetadata(stores=[replace(store, direction=LOAD)]))
    assert rig.worker.num_jobs_in_flight == 0


class _RefusingTracker:
    """A JobTracker whose ``request_finished`` fails (as it does for a request marked twice
    while a job of it is pending)."""

    def __init__(self, inner: JobTracker) -> None:
        self.inner = inner

    def request_finished(self, req_id: str) -> None:
        raise InvalidStateError(f"request {req_id!r} is already marked finished")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_refused_finished_request_loses_no_result() -> None:
    rig = Rig()
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    rig.worker.submit_stores(rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)]))
    tracker = rig.worker.tracker
    rig.worker.tracker = _RefusingTracker(tracker)  # type: ignore[assignment]
    with pytest.raises(InvalidStateError, match="'A' is already marked finished"):
        rig.worker.get_finished(["A"])
    rig.worker.tracker = tracker
    out = rig.worker.get_finished(["A"])
    assert out == WorkerOutput(
        transfers=[(0, True)], finished_storing=["A"], ready_cpu_blocks=READY
    )
    rig.sched.update_from_output(out)
    assert rig.manager.block_state(101) == 0


def test_finished_request_ids_must_be_strings_and_nothing_is_consumed() -> None:
    rig = Rig()
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    rig.worker.submit_stores(rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)]))
    with pytest.raises(InvalidArgumentError, match=r"finished_req_ids\[1\] is int 5, not a str"):
        rig.worker.get_finished(["A", 5])  # type: ignore[list-item]
    assert list(rig.transfers[0].in_flight()) == [0]  # the result was not taken
    assert rig.worker.get_finished(["A"]) == WorkerOutput(
        transfers=[(0, True)], finished_storing=["A"], ready_cpu_blocks=READY
    )
