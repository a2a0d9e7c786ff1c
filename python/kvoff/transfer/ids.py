"""A pinned ring holding each in-flight job's GPU block ids where the gather/scatter kernel can
read them.

The kernel reads a job's ids straight from pinned host memory (one 8-byte read per program over
the link, mapped through unified addressing), so a job needs no upload: no copy, no event, no
device allocation, nothing that could wait for the device. A job's range of the ring is held
until the job's end event has completed, then reused.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["PinnedIdRing"]


class PinnedIdRing:
    def __init__(self, capacity: int, *, pin: bool = True) -> None:
        self._pin = pin
        self.ids = torch.empty(max(capacity, 1), dtype=torch.int64, pin_memory=pin)
        self._np = self.ids.numpy()
        self._pos = 0
        self._held: deque[tuple[int, int, Any]] = deque()  # (start, end, done event), in order

    def put(self, ids: npt.NDArray[np.int64]) -> int:
        """Copy ``ids`` into a free range; returns its start (hold it with :meth:`hold`)."""
        n = ids.size
        if n > self.ids.numel():
            for _, _, ev in self._held:  # the old ring stays referenced until then
                ev.synchronize()
            self._held.clear()
            self.ids = torch.empty(2 * n, dtype=torch.int64, pin_memory=self._pin)
            self._np = self.ids.numpy()
            self._pos = 0
        if self._pos + n > self.ids.numel():
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
