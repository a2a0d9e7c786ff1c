"""Tensor parallelism: every rank reports every transfer once, under its own rank. A block
becomes loadable only when every rank has stored it, so a rank that has not reported (or
failed, or died) can never make the scheduler serve bytes that rank never copied."""

from __future__ import annotations

import pickle

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
from kvoff.connector import OffloadingWorker, RequestStep, WorkerOutput

A_CPU = [101, 103, 105, 107]


def _store_a_on_both(rig: Rig) -> list[WorkerOutput]:
    """A's store issued on both ranks, its outputs collected but not yet applied."""
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    outs = []
    for w in rig.workers:
        w.submit_stores(meta)
        outs.append(w.get_finished())
    return outs


def test_outputs_carry_the_workers_rank() -> None:
    rig = Rig(num_workers=2)
    outs = _store_a_on_both(rig)
    assert [(o.rank, o.transfers) for o in outs] == [(0, [(0, True)]), (1, [(0, True)])]
    assert [w.rank for w in rig.workers] == [0, 1]
    assert pickle.loads(pickle.dumps(outs[1])) == outs[1]


def test_one_ranks_output_applied_twice_is_refused_and_nothing_is_served() -> None:
    rig = Rig(num_workers=2)
    out0, out1 = _store_a_on_both(rig)
    rig.sched.update_from_output(out0)
    with pytest.raises(
        InvalidStateError, match=r"rank 0 already reported transfer ids \[0\]; nothing was applied"
    ):
        rig.sched.update_from_output(out0)
    # Rank 1 never copied A's blocks: none of them is loadable, and B is not served from them.
    assert [rig.manager.block_state(h) for h in A_CPU] == [-1] * 4
    assert rig.manager.lookup(A_CPU) == 0
    assert rig.sched.get_num_new_matched_tokens("B", B_HASHES, 40, 0) == 0
    assert rig.sched.num_transfers_in_flight == 1
    assert rig.sched.pending_reports() == {1: [0]}
    rig.sched.update_from_output(out1)
    assert [rig.manager.block_state(h) for h in A_CPU] == [0] * 4
    assert rig.sched.pending_reports() == {}
    assert rig.sched.get_num_new_matched_tokens("B", B_HASHES, 40, 0) == 32


def test_a_missing_rank_keeps_the_blocks_unloadable() -> None:
    rig = Rig(num_workers=2)
    out0, out1 = _store_a_on_both(rig)
    rig.sched.update_from_output(out0)
    for _ in range(3):  # rank 0 keeps reporting; rank 1 is late
        rig.sched.update_from_output(rig.workers[0].get_finished())
        assert rig.manager.lookup(A_CPU) == 0
        assert rig.sched.get_num_new_matched_tokens("B", B_HASHES, 40, 0) == 0
        assert rig.sched.pending_reports() == {1: [0]}
    assert rig.sched.request_finished("A") is True  # its GPU blocks wait for rank 1
    assert rig.sched.take_freeable() == []
    rig.sched.update_from_output(out1)
    assert rig.sched.take_freeable() == ["A"]
    assert rig.manager.lookup(A_CPU) == 4


def test_a_load_finishes_only_when_every_rank_loaded() -> None:
    rig = Rig(num_workers=2)
    for out in _store_a_on_both(rig):
        rig.sched.update_from_output(out)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    meta = rig.sched.build_step([])
    outs = []
    for w in rig.workers:
        w.start_loads(meta)
        outs.append(w.get_finished())
    assert [o.finished_loading for o in outs] == [["B"], ["B"]]  # each rank's own view
    rig.sched.update_from_output(outs[1])
    assert rig.sched.take_finished_loading() == []
    assert rig.manager.pinned == 4
    rig.sched.update_from_output(outs[0])
    assert rig.sched.take_finished_loading() == ["B"]
    assert rig.sched.take_finished_loading() == []
    assert rig.manager.pinned == 0
    for rank in (0, 1):
        for a, b in zip(A_IDS[:8], B_IDS[:8], strict=True):
            assert_same_block(rig, b, a, worker=rank)


def test_a_failing_rank_fails_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(num_workers=2)

    def refuse(*args: object) -> None:
        raise RuntimeError("simulated CUDA error on rank 1")

    monkeypatch.setattr(rig.transfers[1], "transfer_async", refuse)
    _, outs = store_a(rig)
    assert [(o.rank, o.transfers) for o in outs] == [(0, [(0, True)]), (1, [(0, False)])]
    assert rig.manager.lookup(A_CPU) == 0
    assert (rig.manager.free, rig.manager.resident) == (NUM_CPU_BLOCKS, 0)
    assert rig.sched.get_num_new_matched_tokens("B", B_HASHES, 40, 0) == 0


def test_a_failing_rank_fails_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(num_workers=2)
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32

    def refuse(*args: object) -> None:
        raise RuntimeError("simulated CUDA error on rank 0")

    monkeypatch.setattr(rig.transfers[0], "transfer_async", refuse)
    _, outs = rig.run_step([])
    assert [o.transfers for o in outs] == [[(1, False)], [(1, True)]]
    assert rig.sched.take_failed_loads() == {"B": B_IDS[:8]}
    assert rig.sched.take_finished_loading() == ["B"]
    assert rig.manager.pinned == 0


@pytest.mark.parametrize(
    ("rank", "error", "message"),
    [
        (2, InvalidArgumentError, r"WorkerOutput.rank=2 outside \[0, num_workers=2\)"),
        (-1, InvalidArgumentError, r"WorkerOutput.rank=-1 outside \[0, num_workers=2\)"),
        (True, InvalidArgumentError, "WorkerOutput.rank must be an integer, got True"),
        ("1", InvalidArgumentError, "WorkerOutput.rank must be an integer, got '1'"),
    ],
)
def test_a_bad_rank_is_refused_and_nothing_is_applied(
    rank: object, error: type[Exception], message: str
) -> None:
    rig = Rig(num_workers=2)
    out0, out1 = _store_a_on_both(rig)
    bad = WorkerOutput(transfers=out1.transfers, rank=rank)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        rig.sched.update_from_output(bad)
    assert rig.sched.pending_reports() == {0: [0], 1: [0]}
    for out in (out0, out1):
        rig.sched.update_from_output(out)
    assert rig.manager.lookup(A_CPU) == 4


@pytest.mark.parametrize(
    ("rank", "message"),
    [
        (-1, "rank must be a non-negative integer, got -1"),
        (True, "rank must be a non-negative integer, got True"),
        (1.0, "rank must be a non-negative integer, got 1.0"),
    ],
)
def test_worker_rank_must_be_a_non_negative_integer(rank: object, message: str) -> None:
    rig = Rig()
    with pytest.raises(InvalidArgumentError, match=message):
        OffloadingWorker(rig.transfers[0], JobTracker(), rank=rank)  # type: ignore[arg-type]


def test_a_dead_rank_fails_what_it_never_reported_and_nothing_is_served() -> None:
    rig = Rig(num_workers=2)
    for out in _store_a_on_both(rig):
        rig.sched.update_from_output(out)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    d_hashes, d_ids = [400, 401], [33, 34, 35]
    assert rig.admit("D", d_hashes, d_ids, 9) == 0
    meta = rig.sched.build_step([RequestStep("D", d_hashes, d_ids, 9)])
    assert [(s.transfer_id, s.req_id) for s in (*meta.loads, *meta.stores)] == [(1, "B"), (2, "D")]
    w0 = rig.workers[0]
    w0.start_loads(meta)
    w0.submit_stores(meta)
    rig.sched.update_from_output(w0.get_finished())
    assert rig.sched.pending_reports() == {1: [1, 2]}
    # Rank 1's process died before reporting: its transfers fail, nothing waits for it.
    assert rig.sched.fail_rank(1) == [1, 2]
    assert rig.sched.failed_ranks == [1]
    assert rig.sched.num_transfers_in_flight == 0
    assert rig.sched.take_failed_loads() == {"B": B_IDS[:8]}
    assert rig.sched.take_finished_loading() == ["B"]
    assert rig.manager.pinned == 0
    assert 401 not in rig.manager  # D's store failed: freed, never loadable
    # Its shard of every block is gone: the tier serves nothing more and stores nothing more.
    assert rig.sched.get_num_new_matched_tokens("C", B_HASHES, 40, 0) == 0
    meta = rig.sched.build_step([RequestStep("C", B_HASHES, B_IDS, 40)])
    assert (meta.loads, meta.stores) == ([], [])
    with pytest.raises(InvalidStateError, match=r"cannot load 32 tokens: rank\(s\) \[1\] failed"):
        rig.sched.update_state_after_alloc("C", B_HASHES, B_IDS, 0, 32)
    assert rig.manager.pinned == 0
    with pytest.raises(InvalidStateError, match=r"rank 1 was failed by fail_rank\(\)"):
        rig.sched.update_from_output(WorkerOutput(rank=1))
    assert rig.sched.fail_rank(1) == []  # once is enough


def test_a_dead_rank_leaves_transfers_other_ranks_still_owe() -> None:
    rig = Rig(num_workers=3)
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    outs = []
    for w in rig.workers:
        w.submit_stores(meta)
        outs.append(w.get_finished())
    rig.sched.update_from_output(outs[0])
    assert rig.sched.fail_rank(2) == []  # rank 1 has not reported yet
    assert rig.sched.pending_reports() == {1: [0]}
    rig.sched.update_from_output(outs[1])
    assert rig.sched.num_transfers_in_flight == 0
    assert rig.manager.lookup(A_CPU) == 0  # failed on rank 2: freed
    assert rig.manager.free == NUM_CPU_BLOCKS


@pytest.mark.parametrize("rank", [2, -1, True])
def test_fail_rank_refuses_a_rank_that_does_not_exist(rank: object) -> None:
    rig = Rig(num_workers=2)
    _store_a_on_both(rig)
    with pytest.raises(InvalidArgumentError, match="rank"):
        rig.sched.fail_rank(rank)  # type: ignore[arg-type]
    assert rig.sched.failed_ranks == []
    assert rig.sched.pending_reports() == {0: [0], 1: [0]}


def test_a_load_queued_when_its_only_rank_dies_is_never_sent() -> None:
    rig = Rig()
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32  # queued for the next build_step
    assert rig.sched.fail_rank(0) == [1]
    assert rig.sched.take_failed_loads() == {"B": B_IDS[:8]}
    assert rig.sched.take_finished_loading() == ["B"]
    assert rig.sched.build_step([]).loads == []
    assert (rig.manager.pinned, rig.sched.num_transfers_in_flight) == (0, 0)
