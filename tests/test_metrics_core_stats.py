"""The exporter fed by the real StatsAccumulator gives what the v1 dict helper gives.

Skipped until the stats part (kvoff.StatsAccumulator) is in the build; it cross-checks
stats_dicts.py against the real snapshot layout.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

import kvoff
from kvoff.metrics import OffloadPromMetrics, format_stats
from stats_dicts import Transfer, v1_dict

# getattr, not an attribute access, so that type checking passes before and after the merge.
StatsAccumulator = getattr(kvoff, "StatsAccumulator", None)
pytestmark = pytest.mark.skipif(
    StatsAccumulator is None,
    reason="kvoff.StatsAccumulator is not in this build yet (stats part)",
)

TRANSFERS = [
    Transfer("GPU_to_CPU", 4096, 10_000, blocks=1),
    Transfer("GPU_to_CPU", 2_000_000, 1_000_000, blocks=4),
    Transfer("GPU_to_CPU", 1_000_000, 500, blocks=2, success=False),
    Transfer("CPU_to_GPU", 150_000_000, 5_000_000, blocks=32),
    Transfer("CPU_to_GPU", 262_144, 262_144, blocks=1),
    Transfer("CPU_to_GPU", 5_000_000_000, 20_000_000_000, blocks=1000),
]


def samples(reg: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in reg.collect()
        for s in family.samples
    }


def test_real_snapshots_match_the_helper_dicts() -> None:
    assert StatsAccumulator is not None
    acc = StatsAccumulator()
    for t in TRANSFERS:
        acc.record_transfer(t.direction, t.nbytes, t.ns / 1e9, t.success, t.blocks)
    acc.record_lookup(400, 312, 6400, 4992)
    acc.record_stored(10)
    acc.record_evicted(2)
    acc.record_allocation_failure()
    acc.set_occupancy(1000, 10, 3)
    first = acc.take()
    acc.record_lookup(8, 8, 128, 128)
    second = acc.take()

    real = CollectorRegistry()
    exporter = OffloadPromMetrics(real, vllm_compatible=True)
    exporter.observe(first)
    exporter.observe(second, engine=1)

    expected_first = v1_dict(
        TRANSFERS,
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
    # Occupancy gauges persist across take().
    expected_second = v1_dict(
        blocks_queried=8,
        blocks_hit=8,
        tokens_queried=128,
        tokens_hit=128,
        capacity_blocks=1000,
        resident_blocks=10,
        pinned_blocks=3,
    )
    helper = CollectorRegistry()
    reference = OffloadPromMetrics(helper, vllm_compatible=True)
    reference.observe(expected_first)
    reference.observe(expected_second, engine=1)

    assert samples(real) == samples(helper)
    assert format_stats(first) == format_stats(expected_first)
    assert format_stats(first) == (
        "KV offload: GPU_to_CPU 2.0 MB in 1.0 ms (2.0 GB/s, 2 ops, 1 failed), "
        "CPU_to_GPU 5.2 GB in 20.01 s (257.4 MB/s, 3 ops), hits 312/400 blocks (78.0%)"
    )
