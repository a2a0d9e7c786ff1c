"""The worker half: runs the scheduler's transfers on this process's GPU and reports back."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kvoff._core import JobTracker
from kvoff.connector.lifecycle import RequestLifecycle
from kvoff.connector.messages import (
    LOAD,
    STORE,
    BlockHash,
    RemoteFetchSpec,
    StepMetadata,
    TransferSpec,
    WorkerOutput,
)
from kvoff.errors import InvalidArgumentError, InvalidStateError
from kvoff.transfer import CpuGpuTransfer, TransferResult
from kvoff.transfer.result import DirectionName

if TYPE_CHECKING:
    from kvoff.remote import RemoteTier


class OffloadingWorker:
    """Glue between :class:`StepMetadata`, a :class:`~kvoff.transfer.CpuGpuTransfer` and a
    :class:`~kvoff.JobTracker` (which records every result into its stats accumulator).

    Per step: :meth:`start_loads` before the model's forward pass, :meth:`submit_stores` after
    it (a store waits for the compute stream, so the blocks it reads are final), then
    :meth:`get_finished`. Every output carries the transfer's ``ready_cpu_blocks``, so a tier
    allocated in the background (``CpuGpuTransfer(alloc_in_background=True)``) grows the
    scheduler's usable limit as its chunks are pinned.

    ``rank`` is this worker's tensor-parallel rank (``0 .. num_workers - 1`` of the scheduler):
    each worker of one scheduler has its own, and the scheduler counts a transfer's reports by
    it.

    ``on_result`` is called with every :class:`~kvoff.transfer.TransferResult`, once, after
    the result is already part of the output: if it raises, :meth:`get_finished` still gives
    every other result to it, then raises the first error, and the next :meth:`get_finished`
    returns the output that was not delivered (with whatever completed since).

    ``remote`` (a :meth:`RemoteTier.for_worker <kvoff.remote.RemoteTier.for_worker>` for this
    rank) runs the scheduler's remote fetches (into this rank's CPU blocks, verified before
    they are reported) and writes (borrowing the pinned CPU blocks) on the tier's background
    threads; nothing here waits on the network. The caller closes the tier. With a tracker
    that has stats, the tier's records (both remote directions, errors, dropped writes, the
    queue gauge) are forwarded into that accumulator as they happen (``RemoteStats.attach``).
    """

    def __init__(
        self,
        transfer: CpuGpuTransfer,
        tracker: JobTracker,
        *,
        rank: int = 0,
        on_result: Callable[[TransferResult], None] | None = None,
        remote: RemoteTier | None = None,
    ) -> None:
        #: This worker's tensor-parallel rank; every WorkerOutput it returns carries it.
        self.rank = _rank(rank)
        if remote is not None:
            layout = remote.layout
            if (layout.block_bytes, layout.tp_rank) != (transfer.cpu_block_bytes, self.rank):
                raise InvalidArgumentError(
                    f"the remote tier's layout has block_bytes={layout.block_bytes}, "
                    f"tp_rank={layout.tp_rank}; this worker has cpu_block_bytes="
                    f"{transfer.cpu_block_bytes}, rank={self.rank} (use "
                    "RemoteTier.for_worker(url, layout, rank))"
                )
            if tracker.stats is not None:
                remote.stats.attach(tracker.stats)
        #: The remote tier's worker side, or None.
        self.remote = remote
        self._fetch_of_job: dict[int, int] = {}
        self._newest_fetch = -1
        # Remote results decided without the network (no fetcher, a refused submit, no
        # writer), reported with the next output.
        self._early_fetches: list[tuple[int, tuple[bool, ...]]] = []
        self._early_released: list[BlockHash] = []
        self.transfer = transfer
        self.tracker = tracker
        # Called with every TransferResult, e.g. to keep per-job latencies.
        self.on_result = on_result
        self._transfer_of_job: dict[int, int] = {}
        # Results of jobs that failed before reaching the copy engine, reported with the rest.
        self._early: list[TransferResult] = []
        # The newest transfer id submitted per direction. The scheduler's ids only increase
        # (in each direction), so an id not above it was submitted before: refusing it keeps a
        # StepMetadata started twice from issuing its copies twice, in O(1) memory.
        self._newest: dict[str, int] = {LOAD: -1, STORE: -1}
        # An output built but not handed back (an on_result callback raised): the next
        # get_finished returns it first, so no completed transfer goes unreported.
        self._undelivered: WorkerOutput | None = None
        # The scheduler's lifecycle rule fed with this rank's transfers only: the per-rank
        # report of WorkerOutput.finished_* (the scheduler's take_* are the engine-wide one).
        self._lifecycle = RequestLifecycle()

    def start_loads(self, meta: StepMetadata) -> None:
        """Issue ``meta``'s loads. A load this worker was already given is refused with
        :class:`~kvoff.InvalidStateError` before any of them is issued."""
        if meta.remote_fetches:
            self._check_fetches(meta.remote_fetches)
        self._submit_all("start_loads", LOAD, meta.loads)
        for spec in meta.remote_fetches:
            self._fetch(spec)

    def submit_stores(self, meta: StepMetadata) -> None:
        """Issue ``meta``'s stores; refused whole, like :meth:`start_loads`, if any was already
        given to this worker."""
        self._submit_all("submit_stores", STORE, meta.stores)
        for w in meta.remote_writes:
            self._write(w.block_hashes, w.cpu_block_ids)

    def get_finished(self, finished_req_ids: Iterable[str] = ()) -> WorkerOutput:
        """Collect completed transfers without blocking; ``finished_req_ids`` are requests the
        engine finished this step whose GPU blocks it holds (those for which
        :meth:`OffloadingScheduler.request_finished` returned ``True``). Each is listed in
        ``finished_storing`` once nothing of it is in flight on this rank (at once if nothing
        is): this rank's share of the scheduler's :meth:`~OffloadingScheduler.take_freeable`."""
        finished = list(finished_req_ids)
        for i, req_id in enumerate(finished):
            if not isinstance(req_id, str):
                raise InvalidArgumentError(
                    f"finished_req_ids[{i}] is {type(req_id).__name__} {req_id!r}, not a str "
                    "request id; nothing was collected"
                )
        results = self._early + self.transfer.get_finished()
        self._early = []
        # Recorded (and kept as undelivered) before anything else can raise: the copy engine
        # returns a result only once.
        transfers = [self._complete(r) for r in results]
        fetches, released = self._remote_results()
        self._undelivered = _merge(
            self._undelivered,
            WorkerOutput(
                transfers,
                rank=self.rank,
                remote_fetches=fetches,
                remote_released=released,
                ready_cpu_blocks=self.transfer.ready_cpu_blocks,
            ),
        )
        idle = [r for r in finished if not self._lifecycle.finish(r)]
        storing = [*self._lifecycle.take_freeable(), *idle]
        loading = self._lifecycle.take_finished_loading()
        out = _merge(self._undelivered, WorkerOutput([], storing, loading, self.rank))
        self._undelivered = out
        for req_id in storing:
            self._forget(req_id)
        # The tracker's own lifecycle report (which ignores pending loads) is not used: drained
        # so that it does not grow.
        self.tracker.take_finished()
        self._notify(results)
        self._undelivered = None
        return out

    def handle_preemptions(self, req_ids: Iterable[str]) -> None:
        """Block until every transfer of the preempted requests is done, since their GPU blocks
        are about to be reused. Their results are reported by the next :meth:`get_finished`."""
        jobs = [j for r in req_ids for j in self.tracker.pending_jobs(r)]
        jobs = [j for j in jobs if not any(e.job_id == j for e in self._early)]
        if jobs:
            self._early.extend(self.transfer.wait(jobs))

    @property
    def num_jobs_in_flight(self) -> int:
        return len(self._transfer_of_job)

    @property
    def num_fetches_in_flight(self) -> int:
        return len(self._fetch_of_job)

    def _check_fetches(self, specs: list[RemoteFetchSpec]) -> None:
        if self.remote is None:
            raise InvalidStateError(
                f"the step names {len(specs)} remote fetches but this worker has no remote "
                "tier (give it remote=RemoteTier.for_worker(...)); nothing was issued"
            )
        newest = self._newest_fetch
        for spec in specs:
            if spec.transfer_id <= newest:
                raise InvalidStateError(
                    f"remote fetch {spec.transfer_id} (request {spec.req_id!r}) is not newer "
                    f"than remote fetch {newest} submitted to this worker (is a StepMetadata "
                    "given to start_loads twice?); nothing was issued"
                )
            if len(spec.block_hashes) != len(spec.cpu_block_ids):
                raise InvalidArgumentError(
                    f"remote fetch {spec.transfer_id} names {len(spec.block_hashes)} hashes "
                    f"for {len(spec.cpu_block_ids)} CPU blocks; nothing was issued"
                )
            newest = spec.transfer_id

    def _fetch(self, spec: RemoteFetchSpec) -> None:
        self._newest_fetch = spec.transfer_id
        fetcher = self.remote.fetcher if self.remote is not None else None
        try:
            if fetcher is None:
                raise InvalidStateError("this worker's remote tier has no fetcher")
            items = [
                (h, self.transfer.cpu_block(int(j)))
                for h, j in zip(spec.block_hashes, spec.cpu_block_ids, strict=True)
            ]
            self._fetch_of_job[fetcher.submit(items)] = spec.transfer_id
        except Exception:
            # Refused before anything was written (closed tier, bad ids): every block is a miss.
            self._early_fetches.append((spec.transfer_id, (False,) * len(spec.block_hashes)))

    def _write(self, hashes: list[BlockHash], cpu_block_ids: object) -> None:
        writer = self.remote.writer if self.remote is not None else None
        for h, j in zip(hashes, cpu_block_ids, strict=True):  # type: ignore[call-overload]
            try:
                if writer is None:
                    raise InvalidStateError("this worker's remote tier has no writer")
                # Borrowed: the scheduler keeps the block pinned until the token comes back.
                writer.enqueue(h, self.transfer.cpu_block(int(j)), copy=False, token=h)
            except Exception:
                self._early_released.append(h)  # never queued: nothing reads it

    def _remote_results(self) -> tuple[list[tuple[int, tuple[bool, ...]]], list[BlockHash]]:
        fetches, self._early_fetches = self._early_fetches, []
        released, self._early_released = self._early_released, []
        if self.remote is None:
            return fetches, released
        if self.remote.fetcher is not None:
            for r in self.remote.fetcher.get_finished():
                fetches.append((self._fetch_of_job.pop(r.job_id), r.ok))
        if self.remote.writer is not None:
            released.extend(self.remote.writer.take_released())  # type: ignore[arg-type]
        return fetches, released

    def _submit_all(self, caller: str, direction: str, specs: list[TransferSpec]) -> None:
        newest = self._newest[direction]
        in_flight = set(self._transfer_of_job.values())
        for spec in specs:
            tid = spec.transfer_id
            if spec.direction != direction:
                raise InvalidArgumentError(
                    f"{caller} got transfer {tid} of direction {spec.direction!r}; it issues "
                    f"{direction!r} transfers only; nothing was issued"
                )
            if tid <= newest:
                raise InvalidStateError(
                    f"transfer {tid} ({direction}, request {spec.req_id!r}) is not newer than "
                    f"transfer {newest}, the last {direction} transfer submitted to this worker: "
                    "the scheduler's transfer ids only increase, so it was submitted already "
                    f"(is a StepMetadata given to {caller} twice?); nothing was issued"
                )
            if tid in in_flight:
                raise InvalidStateError(
                    f"transfer {tid} is already in flight on this worker; nothing was issued"
                )
            newest = tid
        for spec in specs:
            self._submit(spec)
            self._newest[direction] = spec.transfer_id

    def _submit(self, spec: TransferSpec) -> None:
        num_blocks = len(spec.gpu_block_ids)
        num_bytes = num_blocks * self.transfer.gpu_block_bytes
        job_id = self.tracker.submit(spec.req_id, spec.direction, num_blocks, num_bytes)
        self._transfer_of_job[job_id] = spec.transfer_id
        self._lifecycle.started(spec.req_id, spec.direction)
        try:
            self.transfer.transfer_async(
                job_id, spec.direction, spec.gpu_block_ids, spec.cpu_block_ids
            )
        except Exception:
            # The copy engine refused the job before enqueueing anything: report it failed, so
            # the scheduler frees the blocks it reserved; the engine keeps running.
            direction: DirectionName = STORE if spec.direction == STORE else LOAD
            self._early.append(TransferResult(job_id, False, 0, 0.0, direction))

    def _complete(self, result: TransferResult) -> tuple[int, bool]:
        req_id = self.tracker.complete(result.job_id, result.success, result.transfer_time)
        self._lifecycle.completed(req_id, result.transfer_type)
        return self._transfer_of_job.pop(result.job_id), result.success

    def _forget(self, req_id: str) -> None:
        """``req_id`` is finished with nothing in flight on this rank. The tracker keeps a
        request it has seen until told it finished; with no job pending that never raises."""
        self.tracker.request_finished(req_id)

    def _notify(self, results: list[TransferResult]) -> None:
        """Give every result to ``on_result``; a raising callback does not keep the others from
        theirs, and the first error is raised once all were called."""
        if self.on_result is None:
            return
        error: Exception | None = None
        for result in results:
            try:
                self.on_result(result)
            except Exception as exc:
                if error is None:
                    error = exc
        if error is not None:
            raise error


def _rank(rank: object) -> int:
    try:
        if isinstance(rank, bool):
            raise TypeError
        r = operator.index(rank)  # type: ignore[arg-type]
    except TypeError:
        r = -1
    if r < 0:
        raise InvalidArgumentError(f"rank must be a non-negative integer, got {rank!r}")
    return r


def _merge(first: WorkerOutput | None, then: WorkerOutput) -> WorkerOutput:
    """``first`` followed by ``then``; a request named by both is listed once."""
    if first is None:
        return then
    return WorkerOutput(
        [*first.transfers, *then.transfers],
        list(dict.fromkeys([*first.finished_storing, *then.finished_storing])),
        list(dict.fromkeys([*first.finished_loading, *then.finished_loading])),
        then.rank,
        [*first.remote_fetches, *then.remote_fetches],
        [*first.remote_released, *then.remote_released],
        # The newer count: the tier only grows.
        then.ready_cpu_blocks if then.ready_cpu_blocks is not None else first.ready_cpu_blocks,
    )
