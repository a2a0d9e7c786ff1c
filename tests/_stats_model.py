"""A pure-Python reference for what a StatsAccumulator should hold after a list of records:
bucket placement by ``le`` with integer arithmetic, exactly as docs/ARCHITECTURE.md states."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

SIZE_BOUNDS = [
    4096, 16384, 65536, 262144, 1_000_000, 5_000_000, 10_000_000, 20_000_000, 40_000_000,
    60_000_000, 80_000_000, 100_000_000, 150_000_000, 200_000_000, 500_000_000,
    1_000_000_000, 4_000_000_000,
]  # fmt: skip
DURATION_BOUNDS = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
]  # fmt: skip
DURATION_BOUNDS_NS = [round(b * 1e9) for b in DURATION_BOUNDS]
THROUGHPUT_BOUNDS = [
    1e8, 5e8, 1e9, 2e9, 5e9, 1e10, 2e10, 3e10, 4e10, 5e10, 6e10, 8e10, 1e11,
]  # fmt: skip
DIRECTIONS = ("GPU_to_CPU", "CPU_to_GPU", "CPU_to_REMOTE", "REMOTE_to_CPU")
ERROR_KINDS = ("connection", "timeout", "auth", "oom", "server", "truncated", "foreign", "corrupt")


@dataclass(frozen=True)
class Transfer:
    direction: str
    num_bytes: int
    ns: int  # duration; recorded as seconds = ns / 1e9
    success: bool = True
    num_blocks: int = 0

    @property
    def seconds(self) -> float:
        return self.ns / 1e9


def empty_direction() -> dict[str, Any]:
    return {
        "ops": 0,
        "failed_ops": 0,
        "blocks": 0,
        "bytes": 0,
        "failed_bytes": 0,
        "time_ns": 0,
        "size_counts": [0] * (len(SIZE_BOUNDS) + 1),
        "duration_counts": [0] * (len(DURATION_BOUNDS) + 1),
        "throughput_counts": [0] * (len(THROUGHPUT_BOUNDS) + 1),
        "throughput_sum": 0,
    }


def empty_dict() -> dict[str, Any]:
    """An empty version-2 snapshot dict (docs/ARCHITECTURE.md)."""
    return {
        "version": 2,
        "buckets": {
            "size_bytes": list(SIZE_BOUNDS),
            "duration_seconds": list(DURATION_BOUNDS),
            "throughput_bytes_per_second": list(THROUGHPUT_BOUNDS),
        },
        "transfers": {d: empty_direction() for d in DIRECTIONS},
        "lookups": {"blocks_queried": 0, "blocks_hit": 0, "tokens_queried": 0, "tokens_hit": 0},
        "manager": {
            "blocks_stored": 0,
            "blocks_evicted": 0,
            "allocation_failures": 0,
            "capacity_blocks": 0,
            "resident_blocks": 0,
            "pinned_blocks": 0,
        },
        "hits": {"cpu": {"blocks": 0, "tokens": 0}, "remote": {"blocks": 0, "tokens": 0}},
        "remote": {
            "lookups": {"blocks_queried": 0, "blocks_hit": 0},
            "errors": dict.fromkeys(ERROR_KINDS, 0),
            "writes_dropped": 0,
            "write_queue_blocks": 0,
        },
    }


def add_transfer(d: dict[str, Any], t: Transfer) -> None:
    s = d["transfers"][t.direction]
    if not t.success:
        s["failed_ops"] += 1
        s["failed_bytes"] += t.num_bytes
        return
    s["ops"] += 1
    s["blocks"] += t.num_blocks
    s["bytes"] += t.num_bytes
    s["time_ns"] += t.ns
    s["size_counts"][bisect_left(SIZE_BOUNDS, t.num_bytes)] += 1
    s["duration_counts"][bisect_left(DURATION_BOUNDS_NS, t.ns)] += 1
    if t.ns > 0:
        scaled = t.num_bytes * 10**9
        bucket = next(
            (i for i, b in enumerate(THROUGHPUT_BOUNDS) if scaled <= int(b) * t.ns),
            len(THROUGHPUT_BOUNDS),
        )
        s["throughput_counts"][bucket] += 1
        s["throughput_sum"] += (scaled + t.ns // 2) // t.ns


def model(transfers: list[Transfer]) -> dict[str, Any]:
    d = empty_dict()
    for t in transfers:
        add_transfer(d, t)
    return d
