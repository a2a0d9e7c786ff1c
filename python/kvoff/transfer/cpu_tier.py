"""The CPU tier: block-major host memory, allocated (and pinned) in chunks.

One CPU block holds ``ratio`` GPU-block *slots* back to back, and each slot holds that GPU
block's bytes for every layer, contiguous. A load that skips the first GPU blocks of a CPU block
therefore reads a contiguous tail, and adjacent CPU block ids are adjacent bytes, so a job's
copies merge into a few large DMAs.

Why chunks: one ``cudaHostAlloc`` of tens of GiB holds the process (and the GIL) for as long as
the kernel takes to fault in and lock every page, and PyTorch's pinned allocator rounds each
request up to a power of two, which would waste up to half of a large tier. Chunks of a
power-of-two size, each holding whole CPU blocks, keep every call short and the waste below one
CPU block per chunk. A copy never spans two chunks (the planner splits runs at chunk edges).
"""

from __future__ import annotations

import time

import torch

__all__ = ["CpuTier"]


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class CpuTier:
    """``num_blocks`` CPU blocks of ``block_bytes`` each, in chunks of whole blocks."""

    def __init__(self, num_blocks: int, block_bytes: int, *, pin: bool, chunk_bytes: int) -> None:
        span = _pow2_at_least(max(chunk_bytes, block_bytes))
        self.num_blocks = num_blocks
        self.block_bytes = block_bytes
        self.blocks_per_chunk = span // block_bytes
        self.pinned = pin
        began = time.perf_counter()
        chunks: list[torch.Tensor] = []
        for first in range(0, num_blocks, self.blocks_per_chunk):
            n = min(self.blocks_per_chunk, num_blocks - first)
            chunks.append(torch.empty(n * block_bytes, dtype=torch.uint8, pin_memory=pin))
        self.chunks: tuple[torch.Tensor, ...] = tuple(chunks)
        #: Seconds spent allocating (and, with CUDA, pinning) the whole tier.
        self.alloc_seconds = time.perf_counter() - began

    @property
    def nbytes(self) -> int:
        return self.num_blocks * self.block_bytes

    def block(self, cpu_block_id: int) -> torch.Tensor:
        """A uint8 view of one CPU block's bytes."""
        c, row = divmod(cpu_block_id, self.blocks_per_chunk)
        start = row * self.block_bytes
        return self.chunks[c][start : start + self.block_bytes]
