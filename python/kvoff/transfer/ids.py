"""Each in-flight job's GPU block ids, in a pinned host ring and its device mirror.

``transfer_async`` writes a job's ids into the pinned ring (no CUDA call), and the job's first
stream copies them all to the device ring, at the same offset, before its first kernel; the
job's other streams wait for that copy (one event), so a job costs one id copy however many
pieces it has. A job's range of both rings is held until the job's end event has completed,
then reused.
(Reading the ids from pinned memory inside the kernel saves those copies, but stalls every
program on a read across the link: measured, it made the copies steal far more compute.)
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["PinnedIdRing"]


class PinnedIdRing:
    def __init__(self, capacity: int, device: torch.device) -> None:
        self._device = device
        self._alloc(max(capacity, 1))
        self._held: deque[tuple[int, int, Any]] = deque()  # (start, end, done event), in order

    def _alloc(self, capacity: int) -> None:
        self.host = torch.empty(capacity, dtype=torch.int64, pin_memory=True)
        self.dev = torch.empty(capacity, dtype=torch.int64, device=self._device)
        self.host_bytes, self.dev_bytes = self.host.view(torch.uint8), self.dev.view(torch.uint8)
        self._np = self.host.numpy()
        self._pos = 0

    def put(self, ids: npt.NDArray[np.int64]) -> int:
        """Copy ``ids`` into a free range of the host ring; returns its start (then
        :meth:`hold` it)."""
        n = ids.size
        if n > self.host.numel():
            for _, _, ev in self._held:  # the old rings are dropped: nothing may still read them
                ev.synchronize()
            self._held.clear()
            self._alloc(2 * n)
        if self._pos + n > self.host.numel():
            self._pos = 0
        start, end = self._pos, self._pos + n
        while self._held and self._held[0][2].query():
            self._held.popleft()
        for lo, hi, ev in self._held:
            if lo < end and start < hi:
                ev.synchronize()  # only when the ring wrapped onto a job still in flight
        self._np[start:end] = ids
        self._pos = end
        return start

    def hold(self, start: int, n: int, done: Any) -> None:
        """Keep ``[start, start + n)`` until ``done`` (a CUDA event) has completed."""
        self._held.append((start, start + n, done))
