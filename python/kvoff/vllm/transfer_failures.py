"""What ``KvoffConnector`` does when a transfer fails, where vLLM 0.33's connector crashes.

vLLM's ``OffloadingConnectorWorker.get_finished`` asserts that every ``TransferResult`` succeeded,
and its worker metadata carries only "job done" counts, so the scheduler side has no way to
learn of a failure. For an engine a failed copy must cost a cache miss, never the process:

- a failed **store** travels to the scheduler in ``KvoffWorkerMetadata.failed_jobs`` (summed over
  ranks like ``completed_jobs``). When the last rank has reported the job, the scheduler side
  calls ``manager.complete_store(keys, ctx, success=False)``: the chunks go back to the free
  list, never become loadable, and the manager emits its ``removed=True, metadata_only=True``
  event (which vLLM's event tracker does not publish: no ``BlockStored`` was ever published for
  them). vLLM's own bookkeeping then runs unchanged; its ``complete_store`` of the same keys finds
  them absent and skips them, as the 0.33 manager contract says.
- a failed **load** is reported through vLLM's own channel for it,
  ``get_block_ids_with_load_errors()`` (the GPU blocks the load was to fill), which the model
  runner puts in ``KVConnectorOutput.invalid_block_ids``; vLLM's scheduler then recomputes or
  fails the request as ``kv_load_failure_policy`` says. The load job still completes, so its
  chunks are unpinned.
- only successful transfers are counted in vLLM's transfer statistics (bytes that arrived);
  kvoff's worker statistics count failures on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm.config import VllmConfig
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorWorkerMetadata
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.common import (
    OffloadingConnectorMetadata,
    OffloadingWorkerMetadata,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.scheduler import (
    OffloadingConnectorScheduler,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.worker import (
    OffloadingConnectorWorker,
)
from vllm.v1.kv_cache_interface import KVCacheConfig
from vllm.v1.kv_offload.base import GPULoadStoreSpec, OffloadingSpec
from vllm.v1.outputs import KVConnectorOutput

__all__ = ["KvoffConnectorScheduler", "KvoffConnectorWorker", "KvoffWorkerMetadata"]


@dataclass
class KvoffWorkerMetadata(OffloadingWorkerMetadata):
    """vLLM's worker-to-scheduler metadata plus the store jobs that failed on some rank."""

    failed_jobs: dict[int, int] = field(default_factory=dict)  # job id -> ranks that failed it

    def mark_failed(self, job_id: int) -> None:
        self.failed_jobs[job_id] = 1

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        base = super().aggregate(other)
        assert isinstance(base, OffloadingWorkerMetadata)
        failed = dict(self.failed_jobs)
        for job_id, n in getattr(other, "failed_jobs", {}).items():
            failed[job_id] = failed.get(job_id, 0) + n
        return KvoffWorkerMetadata(
            completed_jobs=base.completed_jobs,
            transfer_stats=base.transfer_stats,
            failed_jobs=failed,
        )


class KvoffConnectorWorker(OffloadingConnectorWorker):
    """vLLM's worker side, except that a failed job is reported instead of asserted away."""

    def __init__(
        self, spec: OffloadingSpec, vllm_config: VllmConfig, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(spec, vllm_config, kv_cache_config)
        self._connector_worker_meta = KvoffWorkerMetadata()
        self._load_dst_blocks: dict[int, list[int]] = {}  # load job id -> GPU blocks it fills
        self._load_errors: set[int] = set()

    def start_kv_transfers(self, metadata: OffloadingConnectorMetadata) -> None:
        for job_id, job in metadata.load_jobs.items():
            if isinstance(job.dst_spec, GPULoadStoreSpec):  # vLLM's worker asserts it is
                self._load_dst_blocks[job_id] = [int(b) for b in job.dst_spec.block_ids]
        super().start_kv_transfers(metadata)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str], set[str]]:
        assert self.worker is not None
        meta = self._connector_worker_meta
        assert isinstance(meta, KvoffWorkerMetadata)
        finished_recving: set[str] = set()
        for result in self.worker.get_finished():
            job_id = result.job_id
            is_load = job_id in self._load_jobs
            dst_blocks = self._load_dst_blocks.pop(job_id, [])
            if not result.success:
                if is_load:
                    self._load_errors.update(dst_blocks)
                else:
                    meta.mark_failed(job_id)
            elif result.transfer_size is not None and result.transfer_time is not None:
                direction = meta.transfer_stats.load if is_load else meta.transfer_stats.store
                direction.record(result.transfer_size, result.transfer_time)
            # A failed job is still a finished one: the scheduler must release what it holds.
            meta.mark_completed(job_id)
            req_id = self._load_jobs.pop(job_id, None)
            if req_id is not None:
                finished_recving.add(req_id)
        # Stores never report finished_sending (vLLM tracks them by job, see its worker).
        return set(), finished_recving

    def take_load_errors(self) -> set[int]:
        """GPU blocks whose load failed since the last call (vLLM's ``invalid_block_ids``)."""
        errors, self._load_errors = self._load_errors, set()
        return errors

    def build_connector_worker_meta(self) -> OffloadingWorkerMetadata | None:
        meta = self._connector_worker_meta
        if not meta.completed_jobs:
            return None
        self._connector_worker_meta = KvoffWorkerMetadata()
        return meta

    def shutdown(self) -> None:
        super().shutdown()
        self._connector_worker_meta = KvoffWorkerMetadata()
        self._load_dst_blocks.clear()
        self._load_errors.clear()


class KvoffConnectorScheduler(OffloadingConnectorScheduler):
    """vLLM's scheduler side, except that a store some rank failed is completed as failed."""

    def __init__(
        self, spec: OffloadingSpec, vllm_config: VllmConfig, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(spec, vllm_config, kv_cache_config)
        # Store jobs some rank reported failed, until every rank has reported them.
        self._failed_stores: set[int] = set()

    def _update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        meta = connector_output.kv_connector_worker_meta
        if isinstance(meta, KvoffWorkerMetadata):
            self._failed_stores.update(meta.failed_jobs)
        if self._failed_stores and isinstance(meta, OffloadingWorkerMetadata):
            for job_id, count in meta.completed_jobs.items():
                if job_id not in self._failed_stores:
                    continue
                job = self._jobs.get(job_id)
                if job is None or job_id < self._stale_job_threshold:
                    # Dropped by a cache reset: its chunks are gone already.
                    self._failed_stores.discard(job_id)
                    continue
                if job.is_store and job.pending_count <= count:
                    # The last rank reports it now: no rank writes the chunks any more.
                    req_status = self._req_status[job.req_id]
                    self.manager.complete_store(job.keys, req_status.req_context, success=False)
                    self._failed_stores.discard(job_id)
        # vLLM's bookkeeping; its complete_store skips the keys removed above.
        super()._update_connector_output(connector_output)
