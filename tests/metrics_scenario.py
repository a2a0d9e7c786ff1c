"""A scripted workload for the metrics tests: three snapshots over two engines.

Engine "0" observes INTERVAL_A then INTERVAL_B; engine "1" observes INTERVAL_C. The expected
totals in the tests are worked out by hand from the transfers below (bucket indices in the
comments refer to the bounds in stats_dicts.py).
"""

from __future__ import annotations

from typing import Any

from stats_dicts import Transfer, v1_dict

G2C, C2G = "GPU_to_CPU", "CPU_to_GPU"


def interval_a() -> dict[str, Any]:
    return v1_dict(
        [
            # size le=4096, duration le=1e-5, throughput 4.096e8 -> le=5e8
            Transfer(G2C, 4096, 10_000, blocks=1),
            # size le=5e6, duration le=1e-3, throughput 2e9 -> le=2e9
            Transfer(G2C, 2_000_000, 1_000_000, blocks=4),
            Transfer(G2C, 1_000_000, 500, success=False),
            # size le=1.5e8, duration le=5e-3, throughput 3e10 -> le=3e10
            Transfer(C2G, 150_000_000, 5_000_000, blocks=32),
            # size le=262144, duration 2.62144e-4 -> le=5e-4, throughput 1e9 -> le=1e9
            Transfer(C2G, 262_144, 262_144, blocks=1),
        ],
        blocks_queried=400,
        blocks_hit=312,
        tokens_queried=6400,
        tokens_hit=4992,
        blocks_stored=10,
        blocks_evicted=2,
        allocation_failures=1,
        capacity_blocks=1000,
        resident_blocks=10,
        pinned_blocks=3,
    )


def interval_b() -> dict[str, Any]:
    return v1_dict(
        [
            # size +Inf, duration 20 s -> +Inf, throughput 2.5e8 -> le=5e8
            Transfer(G2C, 5_000_000_000, 20_000_000_000, blocks=1000),
            # size le=5e8, duration le=1e-2, throughput 3e10 -> le=3e10
            Transfer(G2C, 300_000_000, 10_000_000, blocks=60),
            Transfer(C2G, 4096, 100, success=False),
            Transfer(C2G, 8192, 100, success=False),
        ],
        blocks_queried=100,
        tokens_queried=1600,
        blocks_stored=5,
        allocation_failures=2,
        capacity_blocks=1000,
        resident_blocks=15,
        pinned_blocks=0,
    )


def interval_c() -> dict[str, Any]:
    return v1_dict(
        # size le=65536, duration 6.5536e-5 -> le=1e-4, throughput 1e9 -> le=1e9
        [Transfer(C2G, 65_536, 65_536, blocks=1)],
        blocks_queried=8,
        blocks_hit=8,
        tokens_queried=128,
        tokens_hit=128,
        capacity_blocks=500,
        resident_blocks=7,
        pinned_blocks=1,
    )
