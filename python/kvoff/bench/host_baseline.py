"""CPU mode's yardstick: a plain ``copy_`` of the same bytes, timed in the same run.

On CPU tensors there is no link to compare with. After each transfer the shard times one
``copy_`` of as many bytes between two contiguous buffers, at an offset that moves through
buffers larger than the caches (so, like a transfer, it reads and writes memory, not cache),
with torch held to one thread as the CPU path is. Interleaved with the transfers, the copies
see the same machine: on a shared VM whose other tenants come and go, a probe at the end of
the run would compare against another machine.
"""

from __future__ import annotations

import time

import torch

__all__ = ["CopyBaseline"]

_POOL_BYTES = 256 << 20  # per buffer: well beyond any last-level cache of the dev VMs
_ALIGN = 4096


class CopyBaseline:
    """Per direction, the bytes and seconds of the ``copy_`` timed after each transfer."""

    def __init__(self) -> None:
        self._src: torch.Tensor | None = None
        self._dst: torch.Tensor | None = None
        self._offset = 0
        self.samples: dict[str, list[tuple[int, float]]] = {}

    def _buffers(self, nbytes: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = max(_POOL_BYTES, 4 * nbytes)
        if self._src is None or self._dst is None or self._src.numel() < size:
            # Filled now, so no copy pays a page fault on first touch.
            self._src = torch.ones(size, dtype=torch.uint8)
            self._dst = torch.zeros(size, dtype=torch.uint8)
        return self._src, self._dst

    def sample(self, direction: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        src, dst = self._buffers(nbytes)
        if self._offset + nbytes > src.numel():
            self._offset = 0
        at = self._offset
        # The destination trails the source by half a pool: both move through memory.
        to = (at + src.numel() // 2) % (src.numel() - nbytes + 1)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            dst[to : to + nbytes].copy_(src[at : at + nbytes])
            seconds = time.perf_counter() - start
        finally:
            torch.set_num_threads(before)
        self._offset = -(-(at + nbytes) // _ALIGN) * _ALIGN
        self.samples.setdefault(direction, []).append((nbytes, seconds))

    def take(self) -> dict[str, list[tuple[int, float]]]:
        out, self.samples = self.samples, {}
        return out
