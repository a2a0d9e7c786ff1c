"""JobTracker against a small pure-Python model of its documented semantics (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kvoff import InvalidStateError, JobTracker, StatsAccumulator, UnknownJobError

REQS = st.sampled_from(["a", "b", "c", "d"])
DIRS = st.sampled_from(["GPU_to_CPU", "CPU_to_GPU"])


@dataclass
class Req:
    jobs: list[int] = field(default_factory=list)
    stores: int = 0
    loads: int = 0
    finished: bool = False


class JobTrackerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.acc = StatsAccumulator()
        self.tracker = JobTracker(self.acc)
        self.next_id = 0
        self.jobs: dict[int, tuple[str, str, int]] = {}
        self.done: set[int] = set()
        self.reqs: dict[str, Req] = {}
        self.storing: list[str] = []
        self.loading: list[str] = []
        self.ops = {"GPU_to_CPU": [0, 0, 0], "CPU_to_GPU": [0, 0, 0]}  # ok, failed, bytes

    def _forget_if_idle(self, req_id: str) -> None:
        r = self.reqs[req_id]
        if r.finished and not r.jobs:
            del self.reqs[req_id]

    @rule(req_id=REQS, direction=DIRS, size=st.integers(0, 10**6))
    def submit(self, req_id: str, direction: str, size: int) -> None:
        r = self.reqs.get(req_id)
        if r is not None and r.finished:
            try:
                self.tracker.submit(req_id, direction, 1, size)
            except InvalidStateError:
                return
            raise AssertionError("submit after finish must fail")
        job = self.tracker.submit(req_id, direction, 1, size)
        assert job == self.next_id
        self.next_id += 1
        r = self.reqs.setdefault(req_id, Req())
        r.jobs.append(job)
        if direction == "GPU_to_CPU":
            r.stores += 1
        else:
            r.loads += 1
        self.jobs[job] = (req_id, direction, size)

    @rule(data=st.data(), success=st.booleans())
    def complete(self, data: st.DataObject, success: bool) -> None:
        candidates = sorted(self.jobs) + sorted(self.done) + [self.next_id + 3]
        job = data.draw(st.sampled_from(candidates))
        if job not in self.jobs:
            try:
                self.tracker.complete(job, success, 0.001)
            except UnknownJobError:
                return
            raise AssertionError("completing an unknown job must fail")
        req_id, direction, size = self.jobs.pop(job)
        self.done.add(job)
        assert self.tracker.complete(job, success, 0.001) == req_id
        counts = self.ops[direction]
        counts[0 if success else 1] += 1
        counts[2] += size if success else 0
        r = self.reqs[req_id]
        r.jobs.remove(job)
        if direction == "GPU_to_CPU":
            r.stores -= 1
            if r.stores == 0 and r.finished:
                self.storing.append(req_id)
        else:
            r.loads -= 1
            if r.loads == 0 and req_id not in self.loading:
                self.loading.append(req_id)
        self._forget_if_idle(req_id)

    @rule(req_id=REQS)
    def request_finished(self, req_id: str) -> None:
        r = self.reqs.get(req_id)
        if r is not None and r.finished:
            try:
                self.tracker.request_finished(req_id)
            except InvalidStateError:
                return
            raise AssertionError("finishing twice must fail")
        self.tracker.request_finished(req_id)
        if r is None:
            self.storing.append(req_id)
            return
        r.finished = True
        if r.stores == 0:
            self.storing.append(req_id)
        self._forget_if_idle(req_id)

    @rule()
    def take_finished(self) -> None:
        assert self.tracker.take_finished() == (self.storing, self.loading)
        self.storing, self.loading = [], []

    @invariant()
    def pending_match(self) -> None:
        assert self.tracker.num_pending == len(self.jobs)
        for req_id in ["a", "b", "c", "d"]:
            r = self.reqs.get(req_id)
            assert self.tracker.pending_jobs(req_id) == (r.jobs if r else [])

    def teardown(self) -> None:
        r = self.acc.take().reduce()
        for d, (ok, failed, size) in self.ops.items():
            assert (r[f"{d}_ops"], r[f"{d}_failed_ops"], r[f"{d}_total_bytes"]) == (
                ok,
                failed,
                size,
            )


TestJobTrackerModel = JobTrackerMachine.TestCase
TestJobTrackerModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
