"""parse_snapshot (kvoff.metrics.snapshot), the door of every Python consumer: it accepts what
OffloadingConnectorStats.from_dict accepts count for count (ints in 0..=2^64-1), so that nothing
it lets in can break the log line or a scrape later."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kvoff import OffloadingConnectorStats, format_stats
from kvoff.errors import InvalidArgumentError
from kvoff.metrics import OffloadPromMetrics
from kvoff.metrics.snapshot import parse_snapshot
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
            "transfers['GPU_to_CPU']['time_ns'] must be at most 2^64 - 1, got 18446744073709551616",
        ),
        (
            ["transfers", G2C, "time_ns"],
            10**400,
            "transfers['GPU_to_CPU']['time_ns'] must be at most 2^64 - 1, got an int of 1329 bits",
        ),
        (
            ["transfers", G2C, "size_counts", 3],
            2**64,
            "transfers['GPU_to_CPU']['size_counts'][3] must be at most 2^64 - 1, "
            "got 18446744073709551616",
        ),
        (
            ["lookups", "blocks_hit"],
            2**70,
            "lookups['blocks_hit'] must be at most 2^64 - 1, got 1180591620717411303424",
        ),
        (
            ["transfers", G2C, "throughput_sum"],
            2**64,
            "transfers['GPU_to_CPU']['throughput_sum'] must be a finite number in "
            "[0, 2^64 - 1], got 18446744073709551616",
        ),
        (
            ["transfers", G2C, "throughput_sum"],
            1.7e308,
            "transfers['GPU_to_CPU']['throughput_sum'] must be a finite number in "
            "[0, 2^64 - 1], got 1.7e+308",
        ),
        # Python refuses to print ints beyond 4300 digits; the message must not try.
        (
            ["transfers", G2C, "ops"],
            -(10**5000),
            "transfers['GPU_to_CPU']['ops'] must be an int >= 0, got an int of 16610 bits",
        ),
        (
            ["version"],
            10**5000,
            "unsupported stats snapshot version an int of 16610 bits: this kvoff reads version 1",
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
    with pytest.raises(InvalidArgumentError) as info:
        parse_snapshot(bad)
    assert str(info.value) == message
    with pytest.raises(InvalidArgumentError, match="^" + message.replace("[", r"\[")[:30]):
        format_stats(bad)
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
        parse_snapshot(bad)
    assert str(info.value).startswith("snapshot['buckets']['size_bytes'] is [an int of 16610 bits")


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
    # Totals are Python ints: three intervals of 2^64 - 1 each add up exactly.
    assert registry.get_sample_value("kvoff_transfer_bytes_total", labels) == 3 * U64_MAX
    assert registry.get_sample_value("kvoff_transfer_size_bytes_count", labels) == 3 * 18 * U64_MAX
    assert registry.get_sample_value("kvoff_cpu_pinned_blocks", {"engine": "0"}) == U64_MAX
