"""CPU mode: copies between CPU "GPU" tensors and the tier with no staging and no torch threads.

On CPU tensors there is no link to hide and no stream to overlap, so the staged pipeline only
costs: every byte was copied twice (gather into staging, then staging into the tier), the
per-region gather made a temporary of its own, and torch's intra-op threads, on a small shared
machine, waited for each other at every call. Here each run of adjacent CPU slots is copied
straight between its GPU rows and its tier rows, once, by numpy (single-threaded, little
per-call overhead):

- store: ``tier_rows[run] = np.take(region, gpu_ids[run])`` (the take's small buffer stays in
  cache, so memory sees each byte read once and written once);
- load: ``region[gpu_ids[run]] = tier_rows[run]``, a fancy assignment from a view.

Calls are one per (run, region); a job whose CPU ids are consecutive is one run.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kvoff.transfer.cpu_tier import CpuTier
from kvoff.transfer.layout import KvLayout
from kvoff.transfer.plan import Plan

__all__ = ["HostCopier"]

# numpy dtype of each element width the layout allows; wider units mean fewer elements to index.
_NP_OF_WIDTH = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}

Rows = npt.NDArray[np.generic]


class HostCopier:
    """Direct copies for CPU tensors; see the module docstring."""

    def __init__(self, layout: KvLayout, tier: CpuTier) -> None:
        self._tier = tier
        self._width = layout.element_bytes
        self._dtype = _NP_OF_WIDTH[self._width]
        self._slot_len = layout.slot_bytes // self._width  # in elements
        # Every address, row length and stride is a multiple of the width (the layout checked).
        self._regions = [r.numpy().view(self._dtype) for r in layout.regions]
        self._spans = [
            (off // self._width, (off + size) // self._width)
            for off, size in zip(layout.slot_offsets, layout.chunk_bytes, strict=True)
        ]
        self._chunk_rows: dict[int, list[Rows]] = {}

    def _tier_rows(self, chunk: int) -> list[Rows]:
        """Per region, the [slots, row] view of that region's bytes in every slot of a chunk."""
        rows = self._chunk_rows.get(chunk)
        if rows is None:
            flat = self._tier.chunks[chunk].numpy().view(self._dtype)
            slots = flat.reshape(-1, self._slot_len)
            rows = [slots[:, a:b] for a, b in self._spans]
            self._chunk_rows[chunk] = rows
        return rows

    def run_job(self, plan: Plan, store: bool) -> None:
        """Every run of the plan (planned as one piece: the staging offset is then the job's
        own byte offset)."""
        slot_bytes = self._slot_len * self._width
        ids = plan.gpu_ids
        for piece in plan.pieces:
            for job_off, chunk, chunk_off, nbytes in piece.runs:
                first = piece.first + job_off // slot_bytes
                ids_run = ids[first : first + nbytes // slot_bytes]
                self.copy_run(store, ids_run, chunk, chunk_off // slot_bytes)

    def copy_run(self, store: bool, gpu_ids: npt.NDArray[np.int64], chunk: int, slot: int) -> None:
        """Move the slots ``[slot, slot + len(gpu_ids))`` of ``chunk`` to or from ``gpu_ids``."""
        end = slot + gpu_ids.size
        tier_rows = self._tier_rows(chunk)
        if store:
            for region, rows in zip(self._regions, tier_rows, strict=True):
                np.take(region, gpu_ids, axis=0, out=rows[slot:end], mode="clip")
        else:
            for region, rows in zip(self._regions, tier_rows, strict=True):
                region[gpu_ids] = rows[slot:end]
