"""Build version-1 stats snapshot dicts (docs/ARCHITECTURE.md) from scripted transfers.

Written independently of kvoff.metrics: the bounds below are copied from the architecture
document, not imported, so that a wrong bound in the exporter fails the tests.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SIZE_BOUNDS = [
    4096, 16384, 65536, 262144, 1e6, 5e6, 1e7, 2e7, 4e7, 6e7, 8e7, 1e8, 1.5e8, 2e8, 5e8, 1e9, 4e9,
]  # fmt: skip
DURATION_BOUNDS = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1,
    2.5, 5, 10,
]  # fmt: skip
THROUGHPUT_BOUNDS = [1e8, 5e8, 1e9, 2e9, 5e9, 1e10, 2e10, 3e10, 4e10, 5e10, 6e10, 8e10, 1e11]


@dataclass(frozen=True)
class Transfer:
    """One recorded transfer: ``direction`` is "GPU_to_CPU" or "CPU_to_GPU"."""

    direction: str
    nbytes: int
    ns: int
    blocks: int = 1
    success: bool = True


def bucket_index(bounds: list[float], value: float) -> int:
    """Index of the bucket holding ``value``: the first bound >= value (Prometheus ``le``),
    or len(bounds) for +Inf."""
    return bisect.bisect_left(bounds, value)


def _direction(transfers: list[Transfer]) -> dict[str, Any]:
    size = [0] * (len(SIZE_BOUNDS) + 1)
    duration = [0] * (len(DURATION_BOUNDS) + 1)
    throughput = [0] * (len(THROUGHPUT_BOUNDS) + 1)
    out = {"ops": 0, "failed_ops": 0, "blocks": 0, "bytes": 0, "failed_bytes": 0, "time_ns": 0}
    tput_sum = 0.0
    for t in transfers:
        if not t.success:
            out["failed_ops"] += 1
            out["failed_bytes"] += t.nbytes
            continue
        # Integer numerators: Python's int / int is correctly rounded, so a transfer exactly
        # on a bound (1e-5 s, 3e10 B/s) lands in that bound's bucket.
        seconds = t.ns / 10**9
        tput = t.nbytes * 10**9 / t.ns
        out["ops"] += 1
        out["blocks"] += t.blocks
        out["bytes"] += t.nbytes
        out["time_ns"] += t.ns
        size[bucket_index(SIZE_BOUNDS, t.nbytes)] += 1
        duration[bucket_index(DURATION_BOUNDS, seconds)] += 1
        throughput[bucket_index(THROUGHPUT_BOUNDS, tput)] += 1
        tput_sum += tput
    return {
        **out,
        "size_counts": size,
        "duration_counts": duration,
        "throughput_counts": throughput,
        "throughput_sum": round(tput_sum),
    }


def v1_dict(
    transfers: Iterable[Transfer] = (),
    *,
    blocks_queried: int = 0,
    blocks_hit: int = 0,
    tokens_queried: int = 0,
    tokens_hit: int = 0,
    blocks_stored: int = 0,
    blocks_evicted: int = 0,
    allocation_failures: int = 0,
    capacity_blocks: int = 0,
    resident_blocks: int = 0,
    pinned_blocks: int = 0,
) -> dict[str, Any]:
    """The snapshot dict a StatsAccumulator would produce after recording ``transfers`` and
    the given lookup and manager counts."""
    transfers = list(transfers)
    return {
        "version": 1,
        "buckets": {
            "size_bytes": list(SIZE_BOUNDS),
            "duration_seconds": list(DURATION_BOUNDS),
            "throughput_bytes_per_second": list(THROUGHPUT_BOUNDS),
        },
        "transfers": {
            d: _direction([t for t in transfers if t.direction == d])
            for d in ("GPU_to_CPU", "CPU_to_GPU")
        },
        "lookups": {
            "blocks_queried": blocks_queried,
            "blocks_hit": blocks_hit,
            "tokens_queried": tokens_queried,
            "tokens_hit": tokens_hit,
        },
        "manager": {
            "blocks_stored": blocks_stored,
            "blocks_evicted": blocks_evicted,
            "allocation_failures": allocation_failures,
            "capacity_blocks": capacity_blocks,
            "resident_blocks": resident_blocks,
            "pinned_blocks": pinned_blocks,
        },
    }


class SnapshotObject:
    """Stands in for OffloadingConnectorStats where only ``to_dict()`` matters."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return self._data
