"""The CPU tier: block-major host memory, allocated (and pinned) in chunks, possibly while it is
already in use.

One CPU block holds ``ratio`` GPU-block *slots* back to back, and each slot holds that GPU
block's bytes for every layer, contiguous. A load that skips the first GPU blocks of a CPU block
therefore reads a contiguous tail, and adjacent CPU block ids are adjacent bytes, so a job's
copies merge into a few large DMAs.

Why chunks: one ``cudaHostAlloc`` of tens of GiB holds the process (and the GIL) for as long as
the kernel takes to fault in and lock every page, and PyTorch's pinned allocator rounds each
request up to a power of two, which would waste up to half of a large tier. Chunks of a
power-of-two size, each holding whole CPU blocks, keep every call short and the waste below one
CPU block per chunk. A copy never spans two chunks (the planner splits runs at chunk edges).

Why a thread: pinning costs about half a second per GiB, a minute for a 100 GiB tier. The chunks
are allocated in order by one thread of their own, and chunk ``c`` is usable as soon as it is
allocated: CPU blocks ``[0, ready_blocks)`` are ready, and ``ready_blocks`` only grows. Without
CUDA the chunks are zero-filled instead of pinned, so that no page is first touched (a page fault
per 4 KiB, several seconds per GiB on a small VM) inside a transfer.

The allocating thread can be placed on given CPUs (the GPU's NUMA node): under Linux's default
memory policy a page lands on the node of the CPU that first touches it, and pinning touches
every page in the allocating thread.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Set

import torch

__all__ = ["PIN_METHODS", "CpuTier", "allocate_chunk"]


_PIN_GAP_SECONDS = 0.0005


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


PIN_METHODS = ("alloc", "register")


_PAGE = 4096


def _host_register(ptr: int, nbytes: int) -> None:
    """Page-lock memory already faulted in: cuda-python's ``cuMemHostRegister`` where
    importable, else (or where it fails) torch's binding of ``cudaHostRegister``."""
    try:
        from cuda.bindings import driver

        (err,) = driver.cuMemHostRegister(ptr, nbytes, 0)
        if err == driver.CUresult.CUDA_SUCCESS:
            return
    except ImportError:
        pass
    err = torch.cuda.cudart().cudaHostRegister(ptr, nbytes, 0)  # type: ignore[no-untyped-call]
    if getattr(err, "value", err) != 0:
        raise RuntimeError(f"registering {nbytes} bytes of host memory failed: {err}")


def _host_unregister(ptr: int) -> None:
    try:
        from cuda.bindings import driver

        (err,) = driver.cuMemHostUnregister(ptr)
        if err == driver.CUresult.CUDA_SUCCESS:
            return
    except ImportError:
        pass
    torch.cuda.cudart().cudaHostUnregister(ptr)  # type: ignore[no-untyped-call]


def allocate_chunk(nbytes: int, pin: bool, method: str = "alloc") -> torch.Tensor:
    """One chunk: pinned (which faults in and locks every page), or zero-filled (which faults
    in every page now, so no transfer pays a page fault later).

    Pinned by ``method``: ``"alloc"``, torch's pinned allocator (``cudaHostAlloc``: the driver
    faults in, zeroes and locks the pages inside one call); ``"register"``, pageable memory
    zero-filled here (page faults outside any CUDA call) then page-locked in place, which
    leaves the driver only the locking to do (the tier unregisters it when it goes)."""
    if not pin:
        return torch.zeros(nbytes, dtype=torch.uint8)
    if method == "alloc":
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    # Whole pages, page-aligned: the view keeps the allocation alive.
    raw = torch.zeros(nbytes + 2 * _PAGE, dtype=torch.uint8)
    skip = -raw.data_ptr() % _PAGE
    chunk = raw[skip : skip + nbytes]
    _host_register(chunk.data_ptr(), -(-nbytes // _PAGE) * _PAGE)
    return chunk


# Tiers whose allocating thread may still run. At exit each is stopped and joined: a daemon
# thread still inside torch when the interpreter finalizes aborts the process ("terminate
# called without an active exception") as it comes back for the GIL.
_LIVE: weakref.WeakSet[CpuTier] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for tier in list(_LIVE):
        tier.close(wait=True)


class CpuTier:
    """``num_blocks`` CPU blocks of ``block_bytes`` each, in chunks of whole blocks.

    With ``background=True`` the constructor returns at once and the chunks arrive one by one;
    otherwise it returns when all are allocated (and raises what allocating raised). Either way
    the allocation runs on a thread of its own, placed on ``cpus`` when given.
    """

    def __init__(
        self,
        num_blocks: int,
        block_bytes: int,
        *,
        pin: bool,
        chunk_bytes: int,
        background: bool = False,
        cpus: Set[int] | None = None,
        device: torch.device | None = None,
        pin_method: str = "alloc",
    ) -> None:
        span = _pow2_at_least(max(chunk_bytes, block_bytes))
        self.num_blocks = num_blocks
        self.block_bytes = block_bytes
        self.blocks_per_chunk = span // block_bytes
        self.num_chunks = -(-num_blocks // self.blocks_per_chunk)
        self.pinned = pin
        self.cpus = frozenset(cpus) if cpus else None
        # Only the allocating thread appends; a reader that saw ready_blocks == k finds the
        # chunks holding blocks [0, k) already in the list (the count is set after the append).
        self.chunks: list[torch.Tensor] = []
        self.ready_blocks = 0
        #: What allocating raised, if it stopped early (the tier then stays at ready_blocks).
        self.error: BaseException | None = None
        #: Seconds from construction to the first chunk, and to the whole tier (None until then).
        self.first_chunk_seconds: float | None = None
        self.alloc_seconds: float | None = None
        self._device = device
        self._pin_method = pin_method
        self._registered: list[int] = []  # chunk addresses to unregister ("register" only)
        self._began = time.perf_counter()
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._allocate, name="kvoff-cpu-tier", daemon=True)
        self._foreground = not background
        _LIVE.add(self)
        self._thread.start()
        if not background:
            self._done.wait()
            if self.error is not None:
                raise self.error

    def _allocate(self) -> None:
        background_gap = not self._foreground
        try:
            if self.cpus is not None:
                os.sched_setaffinity(0, self.cpus)  # this thread only (Linux)
            if not self._foreground:
                # Zero-filling is page faults, which more threads barely speed up (0.85 GiB/s
                # with one or two on the 2-core dev VM); one thread leaves the other cores to
                # the transfers and the engine. (OpenMP: this thread's team only.)
                torch.set_num_threads(1)
            if self.pinned and self._device is not None:
                # Pinning needs a context; use the tier's device, never create one on device 0.
                torch.cuda.set_device(self._device)
            for first in range(0, self.num_blocks, self.blocks_per_chunk):
                if self._stop.is_set():
                    return
                n = min(self.blocks_per_chunk, self.num_blocks - first)
                chunk = allocate_chunk(n * self.block_bytes, self.pinned, self._pin_method)
                if self.pinned and self._pin_method == "register":
                    self._registered.append(chunk.data_ptr())
                self.chunks.append(chunk)
                self.ready_blocks = first + n
                if self.pinned and background_gap:
                    # Pinning holds a lock of the driver's that every CUDA call of the engine's
                    # threads also takes: a pause between chunks lets those calls through.
                    time.sleep(_PIN_GAP_SECONDS)
                if self.first_chunk_seconds is None:
                    self.first_chunk_seconds = time.perf_counter() - self._began
            self.alloc_seconds = time.perf_counter() - self._began
        except BaseException as e:  # reported through .error, never lost
            self.error = e
        finally:
            self._done.set()

    @property
    def nbytes(self) -> int:
        return self.num_blocks * self.block_bytes

    @property
    def done(self) -> bool:
        """Whether allocation has ended (the whole tier, or an error)."""
        return self._done.is_set()

    def wait(self, num_blocks: int | None = None, timeout: float | None = None) -> int:
        """Block until ``num_blocks`` (default: all) are ready, allocation ended, or ``timeout``
        seconds passed; returns ``ready_blocks``."""
        want = self.num_blocks if num_blocks is None else min(num_blocks, self.num_blocks)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.ready_blocks < want and not self._done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            # Chunks take ~0.1 s each; polling at 5 ms costs nothing and needs no condition.
            self._done.wait(0.005 if left is None else min(0.005, left))
        return self.ready_blocks

    def close(self, wait: bool = False) -> None:
        """Stop allocating after the chunk in progress (what is ready stays usable); with
        ``wait``, return once that chunk is done and the thread has ended."""
        self._stop.set()
        if wait and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def __del__(self) -> None:
        # Registered memory must be unregistered before it is freed (the engine synchronized
        # its copies first); the thread holds the tier while it runs, so it is done by now.
        for ptr in getattr(self, "_registered", ()):
            with contextlib.suppress(Exception):  # interpreter shutdown, or the device is gone
                _host_unregister(ptr)

    def block(self, cpu_block_id: int) -> torch.Tensor:
        """A uint8 view of one CPU block's bytes (which must be ready)."""
        c, row = divmod(cpu_block_id, self.blocks_per_chunk)
        start = row * self.block_bytes
        return self.chunks[c][start : start + self.block_bytes]
