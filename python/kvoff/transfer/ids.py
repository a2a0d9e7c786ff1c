"""Getting each job's GPU block ids onto the device without ever blocking the host.

``Tensor.pin_memory()`` per job can fall back to ``cudaHostAlloc``, which waits for the device,
and a pageable ``non_blocking`` copy waits for its stream; either would stall ``transfer_async``
behind the compute stream. Instead the ids go through a pinned ring, copied on a stream of their
own that nothing else uses, so a ring slot is reusable microseconds after its copy is issued.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["IdUploader"]


class IdUploader:
    def __init__(self, device: torch.device, capacity: int) -> None:
        self._device = device
        self._stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self._host = torch.empty(max(capacity, 1), dtype=torch.int64, pin_memory=True)
        self._pos = 0
        self._pending: deque[tuple[int, int, Any]] = deque()  # (start, end, copy-done event)

    def _reserve(self, n: int) -> int:
        if n > self._host.numel():
            self._stream.synchronize()  # only the ring's own tiny copies: returns at once
            self._pending.clear()
            self._host = torch.empty(2 * n, dtype=torch.int64, pin_memory=True)
            self._pos = 0
        if self._pos + n > self._host.numel():
            self._pos = 0
        start, end = self._pos, self._pos + n
        keep: deque[tuple[int, int, Any]] = deque()
        for lo, hi, ev in self._pending:
            if lo < end and start < hi:
                ev.synchronize()  # the ring's own stream: at most a few microseconds
            elif not ev.query():
                keep.append((lo, hi, ev))
        self._pending = keep
        self._pos = end
        return start

    def upload(self, ids: npt.NDArray[np.int64], consumer: Any) -> torch.Tensor:
        """``ids`` on the device, ready for work enqueued on ``consumer`` from now on."""
        n = ids.size
        start = self._reserve(n)
        host = self._host[start : start + n]
        host.numpy()[:] = ids
        with torch.cuda.stream(self._stream):
            dev = host.to(self._device, non_blocking=True)
        done = self._stream.record_event()
        self._pending.append((start, start + n, done))
        consumer.wait_event(done)
        dev.record_stream(consumer)
        return dev
