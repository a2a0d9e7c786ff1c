"""The worker half: runs the scheduler's transfers on this process's GPU and reports back."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kvoff._core import JobTracker
from kvoff.connector.messages import LOAD, STORE, StepMetadata, TransferSpec, WorkerOutput
from kvoff.transfer import CpuGpuTransfer, TransferResult
from kvoff.transfer.result import DirectionName


class OffloadingWorker:
    """Glue between :class:`StepMetadata`, a :class:`~kvoff.transfer.CpuGpuTransfer` and a
    :class:`~kvoff.JobTracker` (which records every result into its stats accumulator).

    Per step: :meth:`start_loads` before the model's forward pass, :meth:`submit_stores` after
    it (a store waits for the compute stream, so the blocks it reads are final), then
    :meth:`get_finished`.
    """

    def __init__(
        self,
        transfer: CpuGpuTransfer,
        tracker: JobTracker,
        *,
        on_result: Callable[[TransferResult], None] | None = None,
    ) -> None:
        self.transfer = transfer
        self.tracker = tracker
        # Called with every TransferResult, e.g. to keep per-job latencies.
        self.on_result = on_result
        self._transfer_of_job: dict[int, int] = {}
        # Results of jobs that failed before reaching the copy engine, reported with the rest.
        self._early: list[TransferResult] = []

    def start_loads(self, meta: StepMetadata) -> None:
        for spec in meta.loads:
            self._submit(spec)

    def submit_stores(self, meta: StepMetadata) -> None:
        for spec in meta.stores:
            self._submit(spec)

    def get_finished(self, finished_req_ids: Iterable[str] = ()) -> WorkerOutput:
        """Collect completed transfers without blocking; ``finished_req_ids`` are requests the
        engine finished this step (their GPU blocks wait for their stores)."""
        results = self._early + self.transfer.get_finished()
        self._early = []
        transfers = [self._complete(r) for r in results]
        for req_id in finished_req_ids:
            self.tracker.request_finished(req_id)
        storing, loading = self.tracker.take_finished()
        return WorkerOutput(transfers, list(storing), list(loading))

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

    def _submit(self, spec: TransferSpec) -> None:
        num_blocks = len(spec.gpu_block_ids)
        num_bytes = num_blocks * self.transfer.gpu_block_bytes
        job_id = self.tracker.submit(spec.req_id, spec.direction, num_blocks, num_bytes)
        self._transfer_of_job[job_id] = spec.transfer_id
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
        self.tracker.complete(result.job_id, result.success, result.transfer_time)
        if self.on_result is not None:
            self.on_result(result)
        return self._transfer_of_job.pop(result.job_id), result.success
