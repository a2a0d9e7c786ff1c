"""as_stats (kvoff.metrics.snapshot), the door of every Python consumer: it hands dicts to
OffloadingConnectorStats.from_dict, the one validator, so the exporter and the log line accept
exactly what the core accepts (counts are ints in 0..=2^64-1) and nothing they let in can break a
scrape later. Messages name the key path and never print a huge int in full."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kvoff import OffloadingConnectorStats, format_stats
from kvoff.errors import InvalidArgumentError
from kvoff.metrics import OffloadPromMetrics
from kvoff.metrics.snapshot import as_stats
from stats_dicts import Transfer, v1_dict

U64_MAX = 2**64 - 1
G2C = "GPU_to_CPU"


def edited(path: list[str | int], value: Any) -> dict[str, Any]:
    d = v1_dict([Transfer(G2C, 1000, 1000)], blocks_queried=4, blocks_hit=2)
    target: Any = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["transfers", G2C, "time_ns"],
            2**64,
            "transfers.GPU_to_CPU.time_ns: count 18446744073709551616 exceeds 2^64 - 1",
        ),
        (
            ["transfers", G2C, "time_ns"],
            10**400,
            "transfers.GPU_to_CPU.time_ns: count (an int of 1329 bits) exceeds 2^64 - 1",
        ),
        (
            ["transfers", G2C, "size_counts", 3],
            2**64,
            "transfers.GPU_to_CPU.size_counts[3]: count 18446744073709551616 exceeds 2^64 - 1",
        ),
        (
            ["lookups", "blocks_hit"],
            2**70,
            "lookups.blocks_hit: count 1180591620717411303424 exceeds 2^64 - 1",
        ),
        (
            ["transfers", G2C, "throughput_sum"],
            2**64,
            "transfers.GPU_to_CPU.throughput_sum: count 18446744073709551616 exceeds 2^64 - 1",
        ),
        (
            ["transfers", G2C, "throughput_sum"],
            1.7e308,
            "transfers.GPU_to_CPU.throughput_sum: expected int, got float",
        ),
        # Python refuses to print ints beyond 4300 digits; the message must not try.
        (
            ["transfers", G2C, "ops"],
            -(10**5000),
            "transfers.GPU_to_CPU.ops: negative count (an int of 16610 bits)",
        ),
        (
            ["version"],
            10**5000,
            "version: unsupported format version (an int of 16610 bits) (this build reads 1 and 2)",
        ),
    ],
    # Explicit ids: pytest would print the values, and str(10**5000) raises.
    ids=[
        "time_ns=2^64",
        "time_ns=10^400",
        "size_count=2^64",
        "blocks_hit=2^70",
        "throughput_sum=2^64",
        "throughput_sum=1.7e308",
        "ops=-10^5000",
        "version=10^5000",
    ],
)
def test_counts_beyond_u64_are_refused_by_every_consumer(
    path: list[str | int], value: Any, message: str
) -> None:
    bad = edited(path, value)
    message = "invalid stats dict: " + message
    for consume in (as_stats, format_stats, OffloadingConnectorStats.from_dict):
        with pytest.raises(InvalidArgumentError) as info:
            consume(bad)
        assert str(info.value) == message
    registry = CollectorRegistry()
    exporter = OffloadPromMetrics(registry=registry)
    exporter.observe(edited(["lookups", "blocks_queried"], 5))
    before = generate_latest(registry)
    with pytest.raises(InvalidArgumentError):
        exporter.observe(bad)
    # Refused at the door: the totals are untouched and the next scrape still works.
    assert generate_latest(registry) == before


def test_a_bounds_list_holding_an_unprintable_int_is_refused_cleanly() -> None:
    bad = edited(["buckets", "size_bytes", 0], 10**5000)
    with pytest.raises(InvalidArgumentError) as info:
        as_stats(bad)
    assert str(info.value).startswith(
        "invalid stats dict: buckets.size_bytes: bucket layout differs from this build's [4.096e3, "
    )


def test_everything_at_2_64_minus_1_formats_and_scrapes() -> None:
    d = v1_dict()
    for t in d["transfers"].values():
        for key, value in t.items():
            t[key] = [U64_MAX] * len(value) if isinstance(value, list) else U64_MAX
    for section in ("lookups", "manager"):
        d[section] = dict.fromkeys(d[section], U64_MAX)
    stats = OffloadingConnectorStats.from_dict(d)
    direction = (
        "18.4 EB in 18446744073.71 s (1.0 GB/s, 18446744073709551615 ops, "
        "18446744073709551615 failed)"
    )
    assert format_stats(stats) == (
        f"KV offload: GPU_to_CPU {direction}, CPU_to_GPU {direction}, "
        "hits 18446744073709551615/18446744073709551615 blocks (100.0%)"
    )
    registry = CollectorRegistry()
    exporter = OffloadPromMetrics(registry=registry, vllm_compatible=True)
    for _ in range(3):
        exporter.observe(stats)
    generate_latest(registry)
    labels = {"engine": "0", "direction": G2C}
    # Cumulative totals saturate at 2^64 - 1 ("at least that many"), as the accumulator's
    # counters do; the histogram's _count sums 18 saturated buckets in Python ints.
    assert registry.get_sample_value("kvoff_transfer_bytes_total", labels) == U64_MAX
    assert registry.get_sample_value("kvoff_transfer_size_bytes_count", labels) == 18 * U64_MAX
    assert registry.get_sample_value("kvoff_cpu_pinned_blocks", {"engine": "0"}) == U64_MAX
