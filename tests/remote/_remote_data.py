"""Test data for the remote tier: reproducible block bytes and block hashes."""

from __future__ import annotations

import torch

BLOCK_BYTES = 256 * 1024 + 24  # not a power of two: lengths are checked, not assumed


def block(seed: int, nbytes: int = BLOCK_BYTES) -> torch.Tensor:
    """Distinct, reproducible block bytes."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)


def bhash(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8
