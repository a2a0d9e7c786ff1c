"""The CUDA copy pipeline of one direction: a few streams (two by default), one staging buffer
each.

A job's pieces go round the streams, and each piece runs *entirely* on its stream: a store's
piece copies its block ids to the device, gathers (kernel) into its buffer, then DMAs to the
tier; a load's piece copies its ids, DMAs into its buffer, then scatters. Stream order alone
makes a piece wait for its buffer's previous user and for its own earlier steps, so a piece
needs no event. Piece ``p + 1`` (next stream, next buffer) overlaps piece ``p``; when both DMA
at once they share the link, which is what the link is for.

Per job: one event on the compute stream that the job's first stream waits for (stores read
what compute wrote; loads overwrite blocks compute may still read), together with the previous
job's end; a start timing event; one copy of all the job's block ids to the device ring, after
which one event releases the job's other streams; and, when several streams took part, one event
per extra stream joining them before the end timing event. Events are pooled and reused: waiting
on an event captures its state at that moment, so re-recording it later cannot disturb a wait
already enqueued.

A job starts when the previous job of its direction has ended, as vLLM's own CPU offloading
worker orders its transfers (0.33, ``vllm/v1/kv_offload/cpu/gpu_worker.py``): jobs of one
direction share one link, so overlapping them would gain only the first gather, and the job's
measured time would then include its wait behind the previous one. Its timing events thus
measure the link's time for this job alone; a job's queueing shows in the engine's step time.

Host cost: with the kernel launched directly and the copies made by cuda-python (both checked
at construction, see ``kernels.py`` and ``memcpy.py``) every call names its stream and a piece
costs the host a launch and one call per copy; otherwise the lane sets torch's current stream
per piece and uses the JIT and ``copy_``.
"""

from __future__ import annotations

from typing import Any

import torch

from kvoff.transfer.ids import PinnedIdRing
from kvoff.transfer.kernels import Copier
from kvoff.transfer.memcpy import Memcpy
from kvoff.transfer.plan import Plan

__all__ = ["CudaLane"]


class CudaLane:
    def __init__(
        self, device: torch.device, buffer_bytes: int, num_buffers: int, memcpy: Memcpy
    ) -> None:
        self.device = device
        self.memcpy = memcpy
        self.streams = [torch.cuda.Stream(device) for _ in range(num_buffers)]  # type: ignore[no-untyped-call]
        self.staging = [
            torch.empty(buffer_bytes, dtype=torch.uint8, device=device) for _ in self.streams
        ]
        self._compute_mark = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._join = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._ids_ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._last_end: Any = None  # the newest job's end event: the next job starts after it
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
        ring: PinnedIdRing,
        at: int,
        chunks: list[torch.Tensor],
    ) -> tuple[Any, Any]:
        """Issue every piece of ``plan``, whose GPU block ids are ``ring.host[at:]``; returns
        the job's (start, end) timing events."""
        compute = torch.cuda.current_stream(self.device)
        pieces = plan.pieces
        k = len(self.streams)
        used = [self.streams[(self._next + i) % k] for i in range(max(1, min(k, len(pieces))))]
        head = used[0]
        self._compute_mark.record(compute)
        head.wait_event(self._compute_mark)
        if self._last_end is not None:
            head.wait_event(self._last_end)  # before the pool can hand that event out again
        start = self.timing_event()
        start.record(head)
        copy = self.memcpy.copy
        set_stream = not (copier.explicit_stream and self.memcpy.explicit_stream)
        try:
            if set_stream:
                torch.cuda.set_stream(head)
            n = plan.gpu_ids.size
            if n:
                copy(ring.dev_bytes, 8 * at, ring.host_bytes, 8 * at, 8 * n, head)
            if len(used) > 1:
                self._ids_ready.record(head)
                for s in used[1:]:
                    s.wait_event(self._ids_ready)
            for piece in pieces:
                b = self._next
                self._next = (b + 1) % k
                s, buf = self.streams[b], self.staging[b]
                if set_stream:
                    torch.cuda.set_stream(s)
                first = at + piece.first
                if store:
                    copier.gather(ring.dev, first, piece.count, buf, s)
                    for so, c, co, nb in piece.runs:
                        copy(chunks[c], co, buf, so, nb, s)
                else:
                    for so, c, co, nb in piece.runs:
                        copy(buf, so, chunks[c], co, nb, s)
                    copier.scatter(ring.dev, first, piece.count, buf, s)
        finally:
            if set_stream:
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
        self._last_end = end
        return end

    def drain(self) -> Any:
        """After a failed enqueue: an event after everything either stream holds (so the next
        piece on either stream waits for it too), or None if the device itself is failing."""
        try:
            return self.join(self.streams)
        except Exception:  # nothing left to order
            return None

    def synchronize(self) -> None:
        for s in self.streams:
            s.synchronize()
