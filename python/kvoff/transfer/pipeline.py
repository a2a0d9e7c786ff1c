"""The CUDA copy pipeline of one direction: a few streams (two by default), one staging buffer
each.

A job's pieces go round the streams, and each piece runs *entirely* on its stream:
a store's piece is gather (kernel) then its DMAs to the tier, a load's piece its DMAs into
staging then scatter. Stream order alone then makes a piece wait for its buffer's previous user
and for its own first half, so a piece costs the host one stream switch, one launch and one
``copy_`` per run of adjacent CPU slots, and no event. Piece ``p + 1`` (next stream, next
buffer) overlaps piece ``p``; when both DMA at once they share the link, which is what the link
is for.

Per job: one event on the compute stream that the streams wait for (stores read what compute
wrote; loads overwrite blocks compute may still read), timing events at the start and at the
end, and, when several streams took part, one event per extra stream joining them before the
end. Events are pooled
and reused: waiting on an event captures its state at that moment, so re-recording it later
cannot disturb a wait already enqueued.
"""

from __future__ import annotations

from typing import Any

import torch

from kvoff.transfer.kernels import Copier
from kvoff.transfer.plan import Plan

__all__ = ["CudaLane"]


class CudaLane:
    def __init__(self, device: torch.device, buffer_bytes: int, num_buffers: int = 2) -> None:
        self.device = device
        self.streams = [torch.cuda.Stream(device) for _ in range(num_buffers)]  # type: ignore[no-untyped-call]
        self.staging = [
            torch.empty(buffer_bytes, dtype=torch.uint8, device=device) for _ in self.streams
        ]
        self._compute_mark = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._join = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._timing: list[Any] = []  # free timing events
        self._next = 0  # the stream (and buffer) of the next piece

    def timing_event(self) -> Any:
        return self._timing.pop() if self._timing else torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

    def release(self, *events: Any) -> None:
        """Give a finished job's timing events back."""
        self._timing.extend(events)

    def enqueue(
        self,
        plan: Plan,
        store: bool,
        copier: Copier,
        ids: torch.Tensor,
        ids_first: int,
        chunks: list[torch.Tensor],
    ) -> tuple[Any, Any]:
        """Issue every piece of ``plan``; returns the job's (start, end) timing events.
        ``ids[ids_first + i]`` is the job's ``i``-th GPU block id."""
        compute = torch.cuda.current_stream(self.device)
        pieces = plan.pieces
        k = len(self.streams)
        used = [self.streams[(self._next + i) % k] for i in range(max(1, min(k, len(pieces))))]
        self._compute_mark.record(compute)
        for s in used:
            s.wait_event(self._compute_mark)
        start = self.timing_event()
        start.record(used[0])
        try:
            for piece in pieces:
                b = self._next
                self._next = (b + 1) % k
                buf = self.staging[b]
                torch.cuda.set_stream(self.streams[b])
                first = ids_first + piece.first
                if store:
                    copier.gather(ids, first, piece.count, buf)
                    for so, c, co, nb in piece.runs:
                        chunks[c][co : co + nb].copy_(buf[so : so + nb], non_blocking=True)
                else:
                    for so, c, co, nb in piece.runs:
                        buf[so : so + nb].copy_(chunks[c][co : co + nb], non_blocking=True)
                    copier.scatter(ids, first, piece.count, buf)
        finally:
            torch.cuda.set_stream(compute)
        return start, self.join(used)

    def join(self, used: list[Any]) -> Any:
        """A timing event after everything on the ``used`` streams."""
        last = used[-1]
        for other in used[:-1]:
            self._join.record(other)
            last.wait_event(self._join)
        end = self.timing_event()
        end.record(last)
        return end

    def drain(self) -> Any:
        """After a failed enqueue: an event after everything either stream holds (so the next
        piece on either stream waits for it too), or None if the device itself is failing."""
        try:
            return self.join(self.streams)
        except Exception:  # nothing left to order
            return None
