"""format_stats: the one-line summary, exact strings."""

from __future__ import annotations

import pytest

from kvoff.errors import InvalidArgumentError
from kvoff.metrics import format_stats
from metrics_scenario import C2G, G2C, interval_a, interval_b, interval_c
from stats_dicts import SnapshotObject, Transfer, v1_dict


def test_empty_snapshot() -> None:
    assert (
        format_stats(v1_dict()) == "KV offload: GPU_to_CPU idle, CPU_to_GPU idle, hits 0/0 blocks"
    )


def test_the_issue_example_shape() -> None:
    snap = v1_dict([Transfer(G2C, 1_200_000_000, 30_000_000)], blocks_queried=400, blocks_hit=312)
    assert format_stats(snap) == (
        "KV offload: GPU_to_CPU 1.2 GB in 30.0 ms (40.0 GB/s, 1 op), CPU_to_GPU idle, "
        "hits 312/400 blocks (78.0%)"
    )


def test_scripted_intervals() -> None:
    # A: G2C 2,004,096 B in 1,010,000 ns (1.98 GB/s), one failure;
    #    C2G 150,262,144 B in 5,262,144 ns (28.56 GB/s).
    assert format_stats(interval_a()) == (
        "KV offload: GPU_to_CPU 2.0 MB in 1.0 ms (2.0 GB/s, 2 ops, 1 failed), "
        "CPU_to_GPU 150.3 MB in 5.3 ms (28.6 GB/s, 2 ops), hits 312/400 blocks (78.0%)"
    )
    # B: G2C 5.3 GB in 20.01 s; C2G only two failures; lookups without a hit.
    assert format_stats(interval_b()) == (
        "KV offload: GPU_to_CPU 5.3 GB in 20.01 s (264.9 MB/s, 2 ops), "
        "CPU_to_GPU 0 B (0 ops, 2 failed), hits 0/100 blocks (0.0%)"
    )
    assert format_stats(SnapshotObject(interval_c())) == (
        "KV offload: GPU_to_CPU idle, CPU_to_GPU 65.5 kB in 65.5 us (1.0 GB/s, 1 op), "
        "hits 8/8 blocks (100.0%)"
    )


@pytest.mark.parametrize(
    ("nbytes", "ns", "expected"),
    [
        (512, 100, "512 B in 0.1 us (5.1 GB/s, 1 op)"),
        (999, 1_000_000_000, "999 B in 1.00 s (999 B/s, 1 op)"),
        (1000, 1_000_000_000, "1.0 kB in 1.00 s (1.0 kB/s, 1 op)"),
        # Units are chosen on the rounded figure: never "1000.0 kB" or "1000.0 us".
        (999_960, 999_960, "1.0 MB in 1.0 ms (1.0 GB/s, 1 op)"),
        (999_940, 999_940_000, "999.9 kB in 999.9 ms (1.0 MB/s, 1 op)"),
        (999_960, 999_960_000, "1.0 MB in 1.00 s (1.0 MB/s, 1 op)"),
        (3 * 10**15, 10**9, "3.0 PB in 1.00 s (3.0 PB/s, 1 op)"),
        # Sizes end at 2^64 - 1 (a count beyond is refused), rates go past the last prefix.
        (2**64 - 1, 10**9, "18.4 EB in 1.00 s (18.4 EB/s, 1 op)"),
        (2**64 - 1, 1, "18.4 EB in 0.0 us (18446744073.7 EB/s, 1 op)"),
        (4096, 0, "4.1 kB in 0.0 us (n/a, 1 op)"),
    ],
)
def test_units(nbytes: int, ns: int, expected: str) -> None:
    snap = v1_dict()
    d = snap["transfers"][C2G]
    d.update(ops=1, bytes=nbytes, time_ns=ns, blocks=1)
    line = format_stats(snap)
    assert line == f"KV offload: GPU_to_CPU idle, CPU_to_GPU {expected}, hits 0/0 blocks"


def test_bad_snapshot_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        format_stats({**v1_dict(), "version": 99})
    assert str(info.value) == (
        "invalid stats dict: version: unsupported format version 99 (this build reads 1 and 2)"
    )
    with pytest.raises(InvalidArgumentError, match="expected a stats snapshot"):
        format_stats("KV offload")
