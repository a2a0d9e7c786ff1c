"""``CpuGpuTransfer``: asynchronous block copies between GPU KV tensors and the CPU tier.

On CUDA each direction owns a lane (``pipeline.py``): two streams with a staging buffer each; a
store's piece is a gather into staging then DMAs to the tier, a load's piece DMAs into staging
then a scatter, and consecutive pieces alternate streams so that one piece's kernel overlaps the
other's DMA. The two lanes share nothing, so stores and loads run at the same time, one on each
direction of the link.

Without CUDA (CPU tensors) there is nothing to overlap: the default copier moves each run of
adjacent CPU slots straight between the KV rows and the tier (``host_copy.py``), the job is
finished when ``transfer_async`` returns, and its time is wall-clock. ``copier="torch"`` or
``"triton"`` (under ``TRITON_INTERPRET=1``) runs the staged pieces on CPU instead, one after
the other, which is how CI checks the pieces and the kernel without a GPU.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kvoff._sysmem import format_gib, physical_memory_bytes
from kvoff.errors import InvalidArgumentError, InvalidStateError, UnknownJobError
from kvoff.transfer.cpu_tier import PIN_METHODS, CpuTier
from kvoff.transfer.host_copy import HostCopier
from kvoff.transfer.ids import PinnedIdRing
from kvoff.transfer.kernels import Copier, TorchCopier, TritonCopier, triton_usable
from kvoff.transfer.layout import KvLayout, parse_layout, positive_int
from kvoff.transfer.memcpy import Memcpy, driver_copy_available
from kvoff.transfer.numa import allocation_cpus, pci_bus_id
from kvoff.transfer.pipeline import CudaLane
from kvoff.transfer.plan import Plan, as_block_ids, plan_job
from kvoff.transfer.result import CPU_TO_GPU, DIRECTIONS, GPU_TO_CPU, TransferResult

__all__ = ["CpuGpuTransfer"]

_COPIERS = ("auto", "triton", "torch", "host")
_CHUNK = 256 << 20  # the tier's chunk when allocated up front
_BACKGROUND_CHUNK = 32 << 20  # ... and in the background (see pin_chunk_bytes)


@dataclass
class _Job:
    job_id: int
    direction: Literal["GPU_to_CPU", "CPU_to_GPU"]
    nbytes: int
    success: bool
    start: Any = None  # timing event (CUDA) or perf_counter seconds (CPU)
    end: Any = None  # event to poll (CUDA) or perf_counter seconds (CPU); None: already done


def _check_fits_in_memory(num_blocks: int, block_bytes: int) -> None:
    """Refuse a tier the machine can never hold, before allocating it: pageable memory is
    granted lazily (the failure would come at first use, or as the OOM killer), and pinned
    memory cannot exceed physical memory at all."""
    phys = physical_memory_bytes()
    need = num_blocks * block_bytes
    if phys is not None and need > phys:
        raise InvalidArgumentError(
            f"the CPU tier needs {need} bytes ({format_gib(need)}: {num_blocks} blocks of "
            f"{block_bytes} bytes), more than this machine's physical memory, {phys} bytes "
            f"({format_gib(phys)}); pass fewer num_cpu_blocks"
        )


def _job_ids(job_ids: object) -> list[int]:
    """``job_ids`` as a list of ints, or InvalidArgumentError saying what was expected."""
    try:
        items = list(job_ids)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgumentError(
            f"job_ids must be an iterable of job ids, got {type(job_ids).__name__} {job_ids!r}"
        ) from None
    ids = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, bool):
                raise TypeError
            ids.append(operator.index(item))
        except TypeError:
            raise InvalidArgumentError(
                f"job_ids[{i}] must be a job id (an integer), got {type(item).__name__} {item!r}"
            ) from None
    return ids


class CpuGpuTransfer:
    """Moves KV blocks between the engine's GPU tensors and a block-major CPU tier.

    Args:
        gpu_kv: per-layer tensors (sequence or mapping), per-layer ``[2, num_blocks, ...]`` K/V
            tensors, or one cross-layer tensor; see ``layout``. Any dtype; the elements of one
            block must be contiguous. All on one CUDA device (or all on CPU, for tests).
        gpu_block_size: tokens per GPU block.
        cpu_block_size: tokens per CPU block, a multiple of ``gpu_block_size``.
        num_cpu_blocks: CPU blocks to allocate.
        layout: ``"blocks_first"``, ``"kv_split"`` or ``"cross_layer"``; None infers it (a
            single tensor is cross-layer, a sequence blocks-first, and a sequence of tensors
            whose ``shape[0]`` is 2 must be declared).
        staging_bytes: device memory per direction for staging, split over
            ``num_staging_buffers`` buffers; each buffer holds whole GPU-block slots.
        num_staging_buffers: buffers (and CUDA streams) per direction (2 = double buffering).
        pin_chunk_bytes: the CPU tier is allocated and pinned in chunks of about this size.
            None (the default): 256 MiB, or 32 MiB with ``alloc_in_background`` (the first
            blocks are usable sooner).
        copier: ``"auto"`` (CUDA: Triton when importable, else torch; CPU: ``"host"``),
            ``"triton"``, ``"torch"`` (both: the staged pipeline) or ``"host"`` (CPU tensors
            only: direct copies, no staging).
        alloc_in_background: return before the CPU tier is allocated; chunks become usable
            one by one (see :attr:`ready_cpu_blocks`). Default: allocate it all first.
        numa: on a machine with several NUMA nodes, allocate the tier from a thread running
            on the GPU's node's CPUs (first touch places the pages there).
        pin_method: how the tier is pinned with CUDA: ``"alloc"`` (torch's pinned allocator)
            or ``"register"`` (pageable memory faulted in by the tier's thread, then
            page-locked in place). None (the default): ``"register"`` with
            ``alloc_in_background`` where cuda-python makes the copies, else ``"alloc"``. A
            ``cudaHostAlloc`` holds the CUDA driver for the whole chunk, so every transfer
            issued meanwhile waits for it (on an H200: 15 ms a transfer with 32 MiB chunks); a
            registration of memory already faulted in does not (0.79 ms against 0.70 idle),
            at 1.9 GiB/s against 2.1.
        max_copy_programs: Triton copier only: at most this many programs along the rows
            axis of the gather/scatter grid (they loop over the rows), so the copy kernels
            hold fewer SMs beside compute; None: one program per row.

    Raises:
        InvalidArgumentError: for any malformed argument (layers whose bytes overlap, a CPU
            tier larger than the machine's physical memory, ...), before anything is allocated.
    """

    def __init__(
        self,
        gpu_kv: object,
        gpu_block_size: int,
        cpu_block_size: int,
        num_cpu_blocks: int,
        *,
        layout: str | None = None,
        staging_bytes: int = 64 << 20,
        num_staging_buffers: int = 2,
        pin_chunk_bytes: int | None = None,
        copier: str = "auto",
        alloc_in_background: bool = False,
        numa: bool = True,
        pin_method: str | None = None,
        max_copy_programs: int | None = None,
    ) -> None:
        gpu_bs = positive_int("gpu_block_size", gpu_block_size)
        cpu_bs = positive_int("cpu_block_size", cpu_block_size)
        if cpu_bs % gpu_bs:
            raise InvalidArgumentError(
                f"cpu_block_size ({cpu_bs}) must be a multiple of gpu_block_size ({gpu_bs})"
            )
        self._num_cpu_blocks = positive_int("num_cpu_blocks", num_cpu_blocks)
        staging = positive_int("staging_bytes", staging_bytes)
        nbuf = positive_int("num_staging_buffers", num_staging_buffers)
        if pin_chunk_bytes is None:
            pin_chunk_bytes = _BACKGROUND_CHUNK if alloc_in_background else _CHUNK
        pin_chunk = positive_int("pin_chunk_bytes", pin_chunk_bytes)
        if copier not in _COPIERS:
            raise InvalidArgumentError(
                f"unknown copier {copier!r}; expected 'auto', 'triton', 'torch' or 'host'"
            )
        if pin_method is None:
            # torch does not see registered memory as pinned (``is_pinned()`` is False), so its
            # ``copy_`` would stage it: register only where the copies are cuda-python's.
            direct = driver_copy_available()
            pin_method = "register" if alloc_in_background and direct else "alloc"
        if pin_method not in PIN_METHODS:
            raise InvalidArgumentError(
                f"unknown pin_method {pin_method!r}; expected 'alloc' or 'register'"
            )
        if max_copy_programs is not None:
            max_copy_programs = positive_int("max_copy_programs", max_copy_programs)
        kv = parse_layout(gpu_kv, layout)
        _check_fits_in_memory(self._num_cpu_blocks, cpu_bs // gpu_bs * kv.slot_bytes)
        if kv.device.type == "cuda" and not torch.cuda.is_available():  # pragma: no cover
            raise InvalidArgumentError(f"gpu_kv is on {kv.device} but CUDA is not available")
        if copier == "triton" and not triton_usable(kv.device):
            raise InvalidArgumentError(
                f"copier='triton' needs triton and a CUDA device (or TRITON_INTERPRET=1); "
                f"gpu_kv is on {kv.device}"
            )
        if copier == "host" and kv.device.type != "cpu":
            raise InvalidArgumentError(
                f"copier='host' copies CPU tensors only; gpu_kv is on {kv.device}"
            )
        slots_per_buffer = staging // nbuf // kv.slot_bytes
        if slots_per_buffer == 0:
            raise InvalidArgumentError(
                f"staging_bytes={staging} split over {nbuf} buffers cannot hold one GPU block "
                f"of {kv.slot_bytes} bytes (all layers); pass at least {nbuf * kv.slot_bytes}"
            )

        self._kv: KvLayout = kv
        self._ratio = cpu_bs // gpu_bs
        # A piece never needs more slots than there are GPU blocks: no staging beyond that.
        self._slots_per_buffer = min(slots_per_buffer, kv.num_blocks)
        self._cuda = kv.device.type == "cuda"
        if copier == "auto":
            copier = "host" if not self._cuda else "triton" if triton_usable(kv.device) else "torch"
        self._copier_name = copier
        self._numa_node, cpus = (
            allocation_cpus(pci_bus_id(kv.device)) if self._cuda and numa else (None, None)
        )
        self._tier = CpuTier(
            self._num_cpu_blocks,
            self._ratio * kv.slot_bytes,
            pin=self._cuda,
            chunk_bytes=pin_chunk,
            background=bool(alloc_in_background),
            cpus=cpus,
            device=kv.device if self._cuda else None,
            pin_method=pin_method,
        )
        self._copier: Copier = (
            TritonCopier(kv, max_copy_programs) if copier == "triton" else TorchCopier(kv)
        )
        self._host = HostCopier(kv, self._tier) if copier == "host" else None
        self._slots_per_chunk = self._tier.blocks_per_chunk * self._ratio
        buffer_bytes = self._slots_per_buffer * kv.slot_bytes
        self._lanes: dict[str, CudaLane] = {}
        self._rings: dict[str, PinnedIdRing] = {}
        self._staging: list[torch.Tensor] = []  # the staged pieces on CPU tensors
        if self._cuda:
            memcpy = Memcpy(kv.device)
            for d in DIRECTIONS:
                self._lanes[d] = CudaLane(kv.device, buffer_bytes, nbuf, memcpy)
                self._rings[d] = PinnedIdRing(4 * kv.num_blocks, kv.device)
        elif self._host is None:
            self._staging = [torch.empty(buffer_bytes, dtype=torch.uint8)]
        self._jobs: dict[int, _Job] = {}

    # ----------------------------------------------------------------- description

    @property
    def device(self) -> torch.device:
        return self._kv.device

    @property
    def layout(self) -> str:
        return self._kv.layout

    @property
    def num_gpu_blocks(self) -> int:
        return self._kv.num_blocks

    @property
    def num_cpu_blocks(self) -> int:
        return self._num_cpu_blocks

    @property
    def gpu_blocks_per_cpu_block(self) -> int:
        return self._ratio

    @property
    def gpu_block_bytes(self) -> int:
        """Bytes of one GPU block across all layers (the size of a slot)."""
        return self._kv.slot_bytes

    @property
    def cpu_block_bytes(self) -> int:
        return self._tier.block_bytes

    @property
    def pinned(self) -> bool:
        return self._tier.pinned

    @property
    def cpu_alloc_seconds(self) -> float | None:
        """Seconds from construction until the whole CPU tier was allocated (and pinned);
        None while it is still being allocated in the background, or if allocating failed."""
        return self._tier.alloc_seconds

    @property
    def cpu_first_ready_seconds(self) -> float | None:
        """Seconds from construction until the first chunk of the tier was usable."""
        return self._tier.first_chunk_seconds

    @property
    def ready_cpu_blocks(self) -> int:
        """CPU blocks usable now: ids ``[0, ready_cpu_blocks)``. Grows (never shrinks) up to
        ``num_cpu_blocks`` while the tier is allocated in the background; a transfer naming a
        CPU block at or above it is refused. Cheap to read (one attribute), e.g. every step."""
        return self._tier.ready_blocks

    @property
    def cpu_alloc_error(self) -> BaseException | None:
        """What allocating the tier raised, if it stopped early: the tier then stays at
        :attr:`ready_cpu_blocks` for good (a background allocation never raises anywhere
        else)."""
        return self._tier.error

    @property
    def cpu_numa_node(self) -> int | None:
        """The NUMA node the tier was allocated from, or None (one node, or unknown)."""
        return self._numa_node

    def wait_cpu_blocks(self, num_blocks: int | None = None, timeout: float | None = None) -> int:
        """Block until ``num_blocks`` CPU blocks (default: all) are ready, allocation stopped,
        or ``timeout`` seconds passed; returns :attr:`ready_cpu_blocks`."""
        if num_blocks is not None:
            num_blocks = positive_int("num_blocks", num_blocks)
        return self._tier.wait(num_blocks, timeout)

    @property
    def cuda_paths(self) -> dict[str, str] | None:
        """How the CUDA pipeline issues its work: ``{"kernel": "direct" | "jit" | "torch",
        "copies": "cuda-python" | "torch"}`` (see ``kernels.py``, ``memcpy.py``); None on CPU."""
        if not self._cuda:
            return None
        kernel = "torch" if self._copier_name == "torch" else "jit"
        if self._copier.explicit_stream:
            kernel = "direct"
        lane = self._lanes[GPU_TO_CPU]
        return {"kernel": kernel, "copies": "cuda-python" if lane.memcpy.direct else "torch"}

    @property
    def copier(self) -> str:
        """``"triton"``, ``"torch"`` (staged pipeline) or ``"host"`` (direct, CPU tensors)."""
        return self._copier_name

    def cpu_block(self, cpu_block_id: int) -> torch.Tensor:
        """A uint8 view of one CPU block: ``gpu_blocks_per_cpu_block`` slots of
        ``gpu_block_bytes``, each the block's rows of every region in layout order."""
        j = operator.index(cpu_block_id)
        if not 0 <= j < self._num_cpu_blocks:
            raise InvalidArgumentError(f"cpu_block_id {j} outside [0, {self._num_cpu_blocks})")
        self._check_ready(j)
        return self._tier.block(j)

    def _check_ready(self, highest: int) -> None:
        ready = self._tier.ready_blocks
        if highest < ready:
            return
        why = (
            f"allocating it stopped: {self._tier.error!r}"
            if self._tier.error is not None
            else "it is still being allocated"
        )
        raise InvalidStateError(
            f"CPU block {highest} is not allocated yet: blocks [0, {ready}) of "
            f"{self._num_cpu_blocks} are ready ({why}); see ready_cpu_blocks"
        )

    # ----------------------------------------------------------------- jobs

    def transfer_async(
        self, job_id: int, direction: str, gpu_block_ids: object, cpu_block_ids: object
    ) -> None:
        """Start moving blocks; the result comes from :meth:`get_finished` or :meth:`wait`.

        ``direction`` is ``"GPU_to_CPU"`` (store: ``len(gpu) == len(cpu) * ratio``, whole CPU
        blocks) or ``"CPU_to_GPU"`` (load: the GPU blocks fill the tail of the CPU blocks, the
        first ``len(cpu) * ratio - len(gpu)`` slots of the first CPU block are skipped). Ids are
        sequences or 1-D integer arrays; destination ids must not repeat.

        Raises (with nothing enqueued and no state changed):
            InvalidArgumentError: unknown direction, ids out of range, mismatched counts,
                repeated destinations.
            InvalidStateError: ``job_id`` was submitted and its result not yet returned.

        A failure while the copies are being issued (a CUDA error, say) does not raise: the job
        comes back with ``success=False`` once whatever it had enqueued has drained, and the
        staging buffers are free again.
        """
        if isinstance(job_id, bool):
            raise InvalidArgumentError(f"job_id must be an integer, got {job_id!r}")
        try:
            jid = operator.index(job_id)
        except TypeError:
            raise InvalidArgumentError(
                f"job_id must be an integer, got {type(job_id).__name__}"
            ) from None
        if direction not in DIRECTIONS:
            raise InvalidArgumentError(
                f"unknown direction {direction!r}; expected 'GPU_to_CPU' or 'CPU_to_GPU'"
            )
        if jid in self._jobs:
            raise InvalidStateError(f"job {jid} is already in flight (or its result uncollected)")
        store = direction == GPU_TO_CPU
        gpu = as_block_ids("gpu_block_ids", gpu_block_ids, self._kv.num_blocks)
        cpu = as_block_ids("cpu_block_ids", cpu_block_ids, self._num_cpu_blocks)
        if cpu.size:
            self._check_ready(int(cpu.max()))
        whole_job = max(gpu.size, 1) if self._host is not None else None
        plan = plan_job(
            store=store,
            gpu_ids=gpu,
            cpu_ids=cpu,
            ratio=self._ratio,
            slot_bytes=self._kv.slot_bytes,
            slots_per_piece=whole_job or self._slots_per_buffer,
            slots_per_chunk=self._slots_per_chunk,
            edge_piece=whole_job or max(1, self._slots_per_buffer // 8),
        )
        dir_name: Literal["GPU_to_CPU", "CPU_to_GPU"] = GPU_TO_CPU if store else CPU_TO_GPU
        job = _Job(jid, dir_name, plan.nbytes, success=True)
        if self._cuda:
            self._enqueue_cuda(job, plan, store)
        else:
            # No collection inside the copy: the copy makes a few short-lived objects (views,
            # index arrays), enough to set off a collection now and then, and a full one in a
            # busy engine takes hundreds of milliseconds (658 ms seen in kvoff bench on the dev
            # VM), which the job's time would report as a transfer that slow.
            collecting = gc.isenabled()
            gc.disable()
            try:
                job.start = time.perf_counter()
                if self._host is not None:
                    self._host.run_job(plan, store)
                else:
                    self._run_staged_on_cpu(plan, store)
                job.end = time.perf_counter()
            except Exception:
                job.success = False
            finally:
                if collecting:
                    gc.enable()
        self._jobs[jid] = job

    def _enqueue_cuda(self, job: _Job, plan: Plan, store: bool) -> None:
        lane, ring = self._lanes[job.direction], self._rings[job.direction]
        n = plan.gpu_ids.size
        at = ring.put(plan.gpu_ids)
        try:
            job.start, job.end = lane.enqueue(
                plan, store, self._copier, ring, at, self._tier.chunks
            )
        except Exception:
            job.success = False
            job.end = lane.drain()
        if job.end is not None:
            ring.hold(at, n, job.end)

    def _run_staged_on_cpu(self, plan: Plan, store: bool) -> None:
        chunks, buf = self._tier.chunks, self._staging[0]
        ids = torch.from_numpy(plan.gpu_ids)
        for piece in plan.pieces:
            if store:
                self._copier.gather(ids, piece.first, piece.count, buf, None)
                for so, c, co, nb in piece.runs:
                    chunks[c][co : co + nb].copy_(buf[so : so + nb])
            else:
                for so, c, co, nb in piece.runs:
                    buf[so : so + nb].copy_(chunks[c][co : co + nb])
                self._copier.scatter(ids, piece.first, piece.count, buf, None)

    # ----------------------------------------------------------------- completion

    def _result(self, job: _Job) -> TransferResult:
        if not job.success:
            seconds = 0.0
        elif self._cuda:
            seconds = job.start.elapsed_time(job.end) / 1000.0
            self._lanes[job.direction].release(job.start, job.end)
        else:
            seconds = job.end - job.start
        return TransferResult(job.job_id, job.success, job.nbytes, seconds, job.direction)

    def _is_done(self, job: _Job) -> bool:
        return job.end is None or not self._cuda or bool(job.end.query())

    def get_finished(self) -> list[TransferResult]:
        """Results of the jobs finished since the last call, in submission order. Never blocks:
        completion is polled with ``event.query()``."""
        done = [j for j in self._jobs.values() if self._is_done(j)]
        for j in done:
            del self._jobs[j.job_id]
        return [self._result(j) for j in done]

    def wait(self, job_ids: Iterable[int]) -> list[TransferResult]:
        """Block until the given jobs finish and return their results (in the order given);
        they are not returned again by :meth:`get_finished`.

        Raises (nothing waited for or consumed):
            InvalidArgumentError: ``job_ids`` is not an iterable of integers, or repeats one.
            UnknownJobError: an id that is not in flight (never submitted, or already returned).
        """
        ids = _job_ids(job_ids)
        for jid in ids:
            if jid not in self._jobs:
                raise UnknownJobError(f"job {jid} is not in flight")
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError(f"job ids repeat in {ids}")
        results = []
        for jid in ids:
            job = self._jobs[jid]
            if self._cuda and job.end is not None:
                job.end.synchronize()
            results.append(self._result(self._jobs.pop(jid)))
        return results

    def in_flight(self) -> Iterator[int]:
        """Ids of the jobs whose results have not been returned yet."""
        return iter(list(self._jobs))

    def __del__(self) -> None:
        # Copies still in flight write into the tier and staging: let them end before either
        # can be freed (or, registered, unregistered).
        for lane in getattr(self, "_lanes", {}).values():
            with contextlib.suppress(Exception):  # the device is gone; nothing left to wait for
                lane.synchronize()
        tier = getattr(self, "_tier", None)
        if tier is not None:
            tier.close()  # a tier still being allocated for no one: stop after this chunk

    def __reduce__(self) -> Any:
        raise TypeError("CpuGpuTransfer holds pinned memory and CUDA streams; it cannot pickle")

    def __repr__(self) -> str:
        return (
            f"CpuGpuTransfer(layout={self._kv.layout!r}, device={self._kv.device}, "
            f"gpu_blocks={self._kv.num_blocks}, cpu_blocks={self._num_cpu_blocks}, "
            f"ratio={self._ratio}, gpu_block_bytes={self._kv.slot_bytes}, "
            f"copier={self._copier_name!r}, pinned={self._tier.pinned})"
        )
