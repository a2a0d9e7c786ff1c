"""CPU mode: copies between CPU "GPU" tensors and the tier, once, on one thread, no staging.

On CPU tensors there is no link to hide and no stream to overlap, so the staged pipeline only
cost: every byte was copied twice (gather into staging, then staging into the tier), the
per-region gather made a temporary of its own (fresh pages, faulted in at every call), and on a
small shared machine torch's intra-op threads waited for each other at every call (a 2-core VM
copies 8 KiB rows at 0.6 GB/s with two threads, 3.2 GB/s with one). Here rows are copied
straight between the KV tensors and the tier, per region, in units of the widest element the
layout allows (8 bytes for any usual KV cache):

- a store's run of adjacent CPU slots (from 32 KiB of rows per region):
  ``torch.index_select(region, 0, ids, out=rows)``, which writes the strided tier rows in
  place in one pass (numpy's ``take`` would buffer them), with torch held to one thread;
- everything else in numpy, whose calls cost about a microsecond where torch's cost several: a
  load's run is ``region[ids] = rows[run]`` (a fancy assignment from a view, one pass; torch's
  ``index_copy_`` is half as fast here), a store's short run ``rows[run] = region[ids]``.
  A load sees each row as one element (a numpy ``void`` of the row's bytes), so each row is one
  ``memcpy`` rather than an element loop: in interleaved medians on the 2-core VM, 1.0-1.1x
  the int64 form through ``transfer_async`` (1.05-1.5x in a numpy-only probe) on the small
  preset's scattered 8 KiB rows; a store's short run gained nothing from it.

A job whose CPU ids are consecutive is one run, one call per region. A fragmented job (more
runs than batches) is copied instead in batches of about 256 KiB of rows per region, slots
named by an index array (``rows[slots] = region[ids]`` and the mirror), so calls stay few and
each batch's temporary stays in cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch

from kvoff.transfer.cpu_tier import CpuTier
from kvoff.transfer.layout import KvLayout
from kvoff.transfer.plan import Plan

__all__ = ["HostCopier"]

_OF_WIDTH = {
    8: (torch.int64, np.uint64),
    4: (torch.int32, np.uint32),
    2: (torch.int16, np.uint16),
    1: (torch.uint8, np.uint8),
}

Rows = npt.NDArray[np.generic]


def _as_row_elements(rows: Rows) -> Rows:
    """A [n, row] view whose rows are contiguous as a 1-D view of n elements of the row's bytes
    (same memory, same row stride)."""
    as_bytes = rows.view(np.uint8)
    return as_bytes.view(np.dtype((np.void, as_bytes.shape[1])))[:, 0]


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    # torch.set_num_threads costs about a microsecond; with OpenMP it sets the calling thread's
    # team size, so other threads' torch calls are not held to one thread meanwhile.
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


_BATCH_BYTES = 256 << 10  # rows copied per call of a fragmented job: a temporary that stays in L2
# A store's run from this many bytes of rows per region is one torch.index_select into the tier
# rows (in place, no temporary), below it numpy (a temporary, then a copy: two passes, but a
# microsecond a call where torch's costs several). On the 2-core VM, cache-cold, torch's
# gather of 8 KiB rows ran at 5-7 GB/s against numpy's 4.6-5.8 from 16 rows (128 KiB) on,
# and even with 4 rows; with 1 KiB rows the two met at about 32 KiB.
_TORCH_STORE_BYTES = 32 << 10


class HostCopier:
    """Direct copies for CPU tensors; see the module docstring."""

    def __init__(self, layout: KvLayout, tier: CpuTier) -> None:
        self._tier = tier
        w = layout.element_bytes
        self._torch_dtype, self._np_dtype = _OF_WIDTH[w]
        self._slot_bytes = layout.slot_bytes
        # Every address, row length and stride is a multiple of the width (the layout checked).
        self._regions = [r.view(self._torch_dtype) for r in layout.regions]
        self._np_regions = [r.numpy() for r in self._regions]
        self._void_regions = [_as_row_elements(r) for r in self._np_regions]
        self._spans = [
            (off // w, (off + size) // w)
            for off, size in zip(layout.slot_offsets, layout.chunk_bytes, strict=True)
        ]
        longest = max(b - a for a, b in self._spans)
        self._batch = max(1, _BATCH_BYTES // (longest * w))  # rows per batch
        # A store's run of at least this many rows goes through torch (see copy_rows).
        self._torch_rows = max(1, _TORCH_STORE_BYTES // (longest * w))
        self._chunk_rows: dict[int, list[torch.Tensor]] = {}
        self._chunk_np_rows: dict[int, list[Rows]] = {}
        self._chunk_void_rows: dict[int, list[Rows]] = {}

    def _tier_rows(self, chunk: int) -> tuple[list[torch.Tensor], list[Rows], list[Rows]]:
        """Per region, the [slots, row] view of that region's bytes in every slot of a chunk
        (torch, numpy, and numpy with one element per row)."""
        rows = self._chunk_rows.get(chunk)
        if rows is None:
            slot_len = self._slot_bytes // self._torch_dtype.itemsize
            slots = self._tier.chunks[chunk].view(self._torch_dtype).view(-1, slot_len)
            rows = [slots[:, a:b] for a, b in self._spans]
            self._chunk_rows[chunk] = rows
            self._chunk_np_rows[chunk] = [r.numpy() for r in rows]
            self._chunk_void_rows[chunk] = [_as_row_elements(r) for r in self._chunk_np_rows[chunk]]
        return rows, self._chunk_np_rows[chunk], self._chunk_void_rows[chunk]

    def run_job(self, plan: Plan, store: bool) -> None:
        """Every run of the plan (planned as one piece: the staging offset is then the job's
        own byte offset)."""
        sb = self._slot_bytes
        ids = plan.gpu_ids
        runs = [
            (piece.first + job_off // sb, chunk, chunk_off // sb, nbytes // sb)
            for piece in plan.pieces
            for job_off, chunk, chunk_off, nbytes in piece.runs
        ]
        with _one_torch_thread():
            if len(runs) <= 2 * -(-ids.size // self._batch):
                for first, chunk, slot, count in runs:
                    self.copy_rows(store, ids[first : first + count], chunk, slot)
                return
            # Fragmented: the slots of each chunk as an index array, in job order.
            columns = zip(*runs, strict=True)
            firsts, chunks, slots, counts = (np.asarray(col, dtype=np.int64) for col in columns)
            offset = np.arange(ids.size) - np.repeat(firsts, counts)
            job = np.repeat(firsts, counts) + offset
            where = np.repeat(slots, counts) + offset
            of_chunk = np.repeat(chunks, counts)
            for c in np.unique(chunks).tolist():
                mine = of_chunk == c
                job_c, where_c = job[mine], where[mine]
                for b in range(0, job_c.size, self._batch):
                    sel = slice(b, b + self._batch)
                    self.copy_rows(store, ids[job_c[sel]], c, where_c[sel])

    def copy_rows(
        self,
        store: bool,
        gpu_ids: npt.NDArray[np.int64],
        chunk: int,
        slots: int | npt.NDArray[np.int64],
    ) -> None:
        """Move ``gpu_ids`` to or from slots of ``chunk``: ``slots, slots + 1, ...`` given the
        first (a run), or the given slots (a batch)."""
        rows, np_rows, void_rows = self._tier_rows(chunk)
        where = slice(slots, slots + gpu_ids.size) if isinstance(slots, int) else slots
        if store and isinstance(slots, int) and gpu_ids.size >= self._torch_rows:
            # A run: torch writes the strided tier rows in place, in one pass.
            ids = torch.from_numpy(gpu_ids)
            for region, tier_rows in zip(self._regions, rows, strict=True):
                torch.index_select(region, 0, ids, out=tier_rows[where])
        elif store:  # numpy: a call costs a microsecond where torch's cost several
            for np_region, tier_np in zip(self._np_regions, np_rows, strict=True):
                tier_np[where] = np_region[gpu_ids]
        else:
            for void_region, tier_void in zip(self._void_regions, void_rows, strict=True):
                void_region[gpu_ids] = tier_void[where]
