"""vLLM 0.33's ``OffloadingWorker`` over kvoff's copy engine (``kvoff.CpuGpuTransfer``).

vLLM hands the worker *canonical* caches: one ``(num_blocks, page_bytes)`` int8 tensor per
backing allocation, rows possibly further apart than a page, plus per group the tensors its
layers live in. Those tensors are blocks-first regions as ``CpuGpuTransfer`` already reads them,
so they are passed as they are: one GPU block's slot in the CPU tier is its row of every tensor.

What the engine cannot express yet, and this worker therefore refuses with a clear error
(docs/VLLM_NOTES.md): a group whose layers live in only some of the tensors (a block would carry
other groups' rows); a job whose first chunk of a group starts mid-chunk on a store, or whose
last chunk ends mid-chunk on a load (the engine skips only at the head of a load). A job that
spans several groups becomes one engine job per group, reported back as one result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from vllm.v1.kv_offload.base import (
    BlockIDsLoadStoreSpec,
    CanonicalKVCaches,
    GPULoadStoreSpec,
    LoadStoreSpec,
    OffloadingWorker,
    TransferResult,
)

import kvoff
from kvoff.errors import InvalidArgumentError
from kvoff.transfer.result import CPU_TO_GPU, GPU_TO_CPU, DirectionName

__all__ = ["KvoffOffloadingWorker"]


@dataclass
class _Job:
    """One vLLM job: the engine jobs it was split into, and what they reported so far."""

    direction: DirectionName
    num_blocks: int
    pending: int
    success: bool = True
    size: int = 0
    time: float = 0.0


def _ids(spec: LoadStoreSpec, what: str) -> np.ndarray:
    if not isinstance(spec, BlockIDsLoadStoreSpec):
        raise InvalidArgumentError(
            f"{what} must be a block-id spec (GPULoadStoreSpec / CPULoadStoreSpec), "
            f"got {type(spec).__name__}"
        )
    return np.asarray(spec.block_ids, dtype=np.int64)


class KvoffOffloadingWorker(OffloadingWorker):
    """Moves chunks between vLLM's canonical GPU caches and kvoff's CPU tier.

    ``blocks_per_chunk`` GPU blocks make one CPU chunk; ``num_chunks`` chunks are allocated
    (pinned when the caches are on CUDA). Every finished job is also recorded in ``stats``
    (a ``kvoff.StatsAccumulator``), the worker's half of kvoff's statistics.
    """

    def __init__(
        self,
        kv_caches: CanonicalKVCaches,
        blocks_per_chunk: int,
        num_chunks: int,
        *,
        copier: str = "auto",
    ) -> None:
        tensors = [t.tensor for t in kv_caches.tensors]
        all_idx = set(range(len(tensors)))
        for g, refs in enumerate(kv_caches.group_data_refs):
            used = {r.tensor_idx for r in refs}
            if used != all_idx:
                raise InvalidArgumentError(
                    f"KV cache group {g} uses tensors {sorted(used)} of {len(tensors)}: kvoff's "
                    "copy engine moves a block's row of every tensor, so it needs every group "
                    "to span all tensors (per-group tensor subsets are not supported yet)"
                )
        for i, t in enumerate(kv_caches.tensors):
            if t.tensor.dim() != 2 or t.tensor.shape[1] != t.page_size_bytes:
                raise InvalidArgumentError(
                    f"canonical tensor {i} has shape {tuple(t.tensor.shape)}; expected "
                    f"(num_blocks, {t.page_size_bytes})"
                )
        self._bpc = blocks_per_chunk
        self._num_groups = len(kv_caches.group_data_refs)
        self._engine = kvoff.CpuGpuTransfer(
            tensors,
            gpu_block_size=1,
            cpu_block_size=blocks_per_chunk,
            num_cpu_blocks=num_chunks,
            layout="blocks_first",
            copier=copier,
        )
        self.stats = kvoff.StatsAccumulator()
        self._jobs: dict[int, _Job] = {}
        self._parent: dict[int, int] = {}  # engine job id -> vLLM job id
        self._next_engine_id = 0
        self._waited: list[kvoff.TransferResult] = []

    @property
    def engine(self) -> kvoff.CpuGpuTransfer:
        return self._engine

    # ----------------------------------------------------------------- submission

    def _pieces(
        self, gpu_spec: GPULoadStoreSpec, gpu: np.ndarray, cpu: np.ndarray, store: bool
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        sizes: Sequence[int] = gpu_spec.group_sizes
        starts: Sequence[int] = gpu_spec.block_indices
        if len(sizes) != self._num_groups or len(starts) != self._num_groups:
            raise InvalidArgumentError(
                f"spec names {len(sizes)} groups, the caches have {self._num_groups}"
            )
        bpc, g_off, c_off = self._bpc, 0, 0
        pieces = []
        for g, (size, start) in enumerate(zip(sizes, starts, strict=True)):
            if size == 0:
                continue
            skip = start % bpc
            n_cpu = -(-(skip + size) // bpc)
            if store and (skip or size % bpc):
                raise InvalidArgumentError(
                    f"group {g}: a store of {size} blocks from block index {start} covers part "
                    f"of a {bpc}-block chunk; kvoff stores whole chunks only"
                )
            if not store and (skip + size) % bpc:
                raise InvalidArgumentError(
                    f"group {g}: a load of {size} blocks from block index {start} ends inside "
                    f"a {bpc}-block chunk; kvoff loads may skip only the head of the first chunk"
                )
            pieces.append((gpu[g_off : g_off + size], cpu[c_off : c_off + n_cpu]))
            g_off += size
            c_off += n_cpu
        if g_off != len(gpu) or c_off != len(cpu):
            raise InvalidArgumentError(
                f"spec sizes do not add up: groups cover {g_off} GPU / {c_off} CPU blocks, the "
                f"spec holds {len(gpu)} / {len(cpu)}"
            )
        return pieces

    def _submit(
        self, job_id: int, direction: DirectionName, gpu_spec: object, cpu_spec: object
    ) -> bool:
        if job_id in self._jobs:
            raise kvoff.InvalidStateError(f"job {job_id} is already in flight")
        if not isinstance(gpu_spec, GPULoadStoreSpec):
            raise InvalidArgumentError(
                f"the GPU side must be a GPULoadStoreSpec, got {type(gpu_spec).__name__}"
            )
        gpu = _ids(gpu_spec, "GPU spec")
        cpu = _ids(cpu_spec, "CPU spec")
        # An empty job still gets one (empty) engine job, so it is reported like any other.
        pieces = self._pieces(gpu_spec, gpu, cpu, direction == GPU_TO_CPU) or [(gpu, cpu)]
        job = _Job(direction, num_blocks=len(gpu), pending=len(pieces))
        self._jobs[job_id] = job
        for g_ids, c_ids in pieces:
            eid = self._next_engine_id
            self._next_engine_id += 1
            self._parent[eid] = job_id
            self._engine.transfer_async(eid, direction, g_ids, c_ids)
        return True

    def submit_store(
        self, job_id: int, src_spec: GPULoadStoreSpec, dst_spec: LoadStoreSpec
    ) -> bool:
        return self._submit(job_id, GPU_TO_CPU, src_spec, dst_spec)

    def submit_load(
        self,
        job_id: int,
        src_spec: LoadStoreSpec,
        dst_spec: GPULoadStoreSpec,
        expedited: bool = False,
    ) -> bool:
        # The engine has one load lane; an expedited load does not overtake queued loads.
        return self._submit(job_id, CPU_TO_GPU, dst_spec, src_spec)

    # ----------------------------------------------------------------- completion

    def _absorb(self, results: list[kvoff.TransferResult]) -> list[TransferResult]:
        done = []
        for r in results:
            job_id = self._parent.pop(r.job_id)
            job = self._jobs[job_id]
            job.pending -= 1
            job.success &= r.success
            job.size += r.transfer_size
            job.time += r.transfer_time
            if job.pending:
                continue
            del self._jobs[job_id]
            seconds = job.time if job.success else 0.0
            self.stats.record_transfer(
                job.direction, job.size, seconds, job.success, job.num_blocks
            )
            done.append(TransferResult(job_id, job.success, job.size, seconds))
        return done

    def get_finished(self) -> list[TransferResult]:
        waited, self._waited = self._waited, []
        return self._absorb(waited + self._engine.get_finished())

    def in_flight(self) -> set[int]:
        """vLLM job ids with copies not yet finished-and-collected (``wait`` or
        ``get_finished`` takes a job out of this set)."""
        engine_ids = set(self._engine.in_flight())
        return {j for e, j in self._parent.items() if e in engine_ids}

    def wait(self, job_ids: set[int]) -> None:
        # Like vLLM's worker, ids not in flight are ignored; results still come from get_finished.
        in_flight = set(self._engine.in_flight())
        eids = [e for e, j in self._parent.items() if j in job_ids and e in in_flight]
        if eids:
            self._waited.extend(self._engine.wait(eids))
