"""Whether two layers' blocks share bytes.

Two regions that share a byte would have a store read one layer's bytes as another's and a load
overwrite one layer with another: a caller bug (two views of one tensor covering the same
memory), refused at construction. Comparing start pointers is not enough (``base[0:16]`` and
``base[1:17]`` start apart and overlap), and comparing extents is too much: engines allocate
one tensor ``[blocks, layers, ...]`` and hand out a view per layer, whose rows interleave
without sharing a byte. So the rows themselves are compared: exactly, in O(1), for regions of
equal block stride (every real layout), and by sorting the rows of the pair otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kvoff.errors import InvalidArgumentError

__all__ = ["check_disjoint"]


@dataclass(frozen=True)
class _Rows:
    """``count`` rows of ``length`` bytes, the first at ``start``, each ``stride`` after the
    previous (rows of one region never overlap each other: the layout checks that)."""

    start: int
    stride: int
    length: int
    count: int

    @property
    def end(self) -> int:
        return self.start + (self.count - 1) * self.stride + self.length


def _rows(region: torch.Tensor) -> _Rows:
    count, length = int(region.shape[0]), int(region.shape[1])
    return _Rows(region.data_ptr(), int(region.stride(0)) if count > 1 else length, length, count)


def _same_stride_overlap(a: _Rows, b: _Rows) -> bool:
    """Rows ``i`` of ``a`` and ``j`` of ``b`` (``a.start <= b.start``, one stride ``s``) share a
    byte iff ``d - a.length < k * s < d + b.length`` for ``k = i - j`` and ``d = b.start -
    a.start``; ``k`` ranges over ``[-(b.count - 1), a.count - 1]``: test its smallest candidate."""
    s, d = a.stride, b.start - a.start
    k = max((d - a.length) // s + 1, -(b.count - 1))
    return k <= a.count - 1 and k * s < d + b.length


def _sorted_overlap(a: _Rows, b: _Rows) -> bool:
    """Sort both regions' rows by start: some two rows overlap iff two neighbours do (and
    neighbours from one region never do)."""
    starts = np.concatenate(
        [
            a.start + a.stride * np.arange(a.count, dtype=np.int64),
            b.start + b.stride * np.arange(b.count, dtype=np.int64),
        ]
    )
    lengths = np.concatenate(
        [np.full(a.count, a.length, np.int64), np.full(b.count, b.length, np.int64)]
    )
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], starts[order] + lengths[order]
    return bool(np.any(starts[1:] < ends[:-1]))


def _overlap(a: _Rows, b: _Rows) -> bool:
    if a.start > b.start:
        a, b = b, a
    if b.start >= a.end:
        return False
    if a.stride == b.stride:
        return _same_stride_overlap(a, b)
    return _sorted_overlap(a, b)


def check_disjoint(regions: list[torch.Tensor], names: list[str]) -> None:
    """Raise InvalidArgumentError naming two regions whose rows share a byte."""
    rows = [_rows(r) for r in regions]
    by_start = sorted(range(len(rows)), key=lambda i: rows[i].start)
    # Sweep by start address: only regions whose extents still reach this one can overlap it.
    reaching: list[int] = []
    for i in by_start:
        reaching = [j for j in reaching if rows[j].end > rows[i].start]
        for j in reaching:
            if _overlap(rows[j], rows[i]):
                first, second = sorted((i, j))
                raise InvalidArgumentError(
                    f"{names[first]} and {names[second]} overlap in memory: some of their "
                    "blocks share bytes, so a copy of one would read or overwrite the other; "
                    "every layer (and K and V) needs memory of its own"
                )
        reaching.append(i)
