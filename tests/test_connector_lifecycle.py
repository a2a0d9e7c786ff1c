"""One rule for the request lifecycle: the scheduler's ``take_freeable`` /
``take_finished_loading`` hold for every rank, and each worker's ``WorkerOutput.finished_*``
is the same rule on its own rank (vLLM's per-rank report), so combined over the ranks the
workers say exactly what the scheduler says."""

from __future__ import annotations

from _connector_rig import B_HASHES, B_IDS, NUM_CPU_BLOCKS, Rig, store_a
from kvoff.connector import LOAD, WorkerOutput
from kvoff.connector.lifecycle import RequestLifecycle
from kvoff.transfer import TransferResult

READY = NUM_CPU_BLOCKS  # the ready count every output carries (the tier is whole)


class _HeldLoads:
    """A copy engine whose load results are held back until ``release()``: a load still in
    flight on this rank."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.held: list[TransferResult] = []
        self.holding = True

    def get_finished(self) -> list[TransferResult]:
        self.held += self.inner.get_finished()  # type: ignore[attr-defined]
        if not self.holding:
            out, self.held = self.held, []
            return out
        out = [r for r in self.held if r.transfer_type != LOAD]
        self.held = [r for r in self.held if r.transfer_type == LOAD]
        return out

    def release(self) -> None:
        self.holding = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_request_finished_while_loading_is_held_on_the_rank_still_loading() -> None:
    rig = Rig(num_workers=2)
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    slow = _HeldLoads(rig.workers[1].transfer)
    rig.workers[1].transfer = slow  # type: ignore[assignment]
    meta = rig.sched.build_step([])
    for w in rig.workers:
        w.start_loads(meta)
    assert rig.sched.request_finished("B") is True  # aborted while its load writes its blocks
    out0 = rig.workers[0].get_finished(["B"])
    out1 = rig.workers[1].get_finished(["B"])
    assert out0 == WorkerOutput([(1, True)], ["B"], ["B"], rank=0, ready_cpu_blocks=READY)
    # Rank 1 is still loading into B's GPU blocks: they are not free on it.
    assert out1 == WorkerOutput([], [], [], rank=1, ready_cpu_blocks=READY)
    rig.sched.update_from_output(out0)
    rig.sched.update_from_output(out1)
    assert (rig.sched.take_freeable(), rig.sched.take_finished_loading()) == ([], [])
    slow.release()
    out1 = rig.workers[1].get_finished()
    assert out1 == WorkerOutput([(1, True)], ["B"], ["B"], rank=1, ready_cpu_blocks=READY)
    rig.sched.update_from_output(out1)
    assert (rig.sched.take_freeable(), rig.sched.take_finished_loading()) == (["B"], ["B"])
    assert rig.manager.pinned == 0
    assert not rig.sched.has_request("B")
    # Nothing is reported twice, and each worker's tracker forgot B.
    for w in rig.workers:
        assert w.get_finished() == WorkerOutput(rank=w.rank, ready_cpu_blocks=READY)
        assert w.tracker.pending_jobs("B") == []


def test_a_request_with_nothing_in_flight_is_freed_at_once_and_never_listed() -> None:
    rig = Rig(num_workers=2)
    store_a(rig)  # A's store completed on both ranks in the same step it finished
    assert rig.sched.take_freeable() == []
    assert rig.sched.request_finished("A") is False
    assert rig.sched.take_freeable() == []


def test_the_rule_on_its_own() -> None:
    lc = RequestLifecycle()
    assert lc.finish("unknown") is False
    lc.started("r", LOAD)
    lc.started("r", LOAD)
    lc.started("r", "GPU_to_CPU")
    assert lc.completed("r", LOAD) is False
    assert lc.take_finished_loading() == []
    assert lc.finish("r") is True
    assert lc.completed("r", LOAD) is False
    assert lc.take_finished_loading() == ["r"]
    assert lc.take_freeable() == []
    assert lc.in_flight("r") == 1
    assert lc.completed("r", "GPU_to_CPU") is True
    assert (lc.take_freeable(), lc.take_freeable(), lc.in_flight("r")) == (["r"], [], 0)
