"""The remote tier in the one stats schema (format version 2): the record API, the v2 dict,
reading version-1 dicts and bytes, and what the exporter and the log line make of it."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from _stats_model import ERROR_KINDS, empty_dict
from kvoff import (
    Direction,
    InvalidArgumentError,
    JobTracker,
    OffloadingConnectorStats,
    StatsAccumulator,
)
from kvoff.metrics import OffloadPromMetrics, format_stats
from metrics_scenario import interval_a
from stats_dicts import v1_dict

W, R = "CPU_to_REMOTE", "REMOTE_to_CPU"


def remote_interval(*, queue: int = 5, scale: int = 1) -> OffloadingConnectorStats:
    """One worker's interval with the remote tier busy (numbers chosen to be checked by hand)."""
    acc = StatsAccumulator()
    for _ in range(scale):
        # 2 blocks of 4 MiB + 48-byte headers in 4 ms: size le=1e7 (6), duration le=5e-3 (7),
        # throughput 2.097176e9 B/s -> le=5e9 (4).
        acc.record_transfer(W, 8_388_704, 4e-3, num_blocks=2)
        # 1 block of 4 MiB in 2 ms: size le=5e6 (5), duration le=2.5e-3 (6), 2.097152e9 -> (4).
        acc.record_transfer(R, 4_194_304, 2e-3, num_blocks=1)
        acc.record_transfer(R, 4_194_304, 2.0, success=False, num_blocks=1)
        acc.record_hits(300, 4800, 12, 192)
        acc.record_remote_lookup(20, 12)
        acc.record_remote_error("timeout", 2)
        acc.record_remote_error("corrupt")
        acc.record_writes_dropped(1)
    acc.set_write_queue(queue)
    return acc.take()


def test_the_record_api_fills_the_v2_dict_exactly() -> None:
    d = remote_interval().to_dict()
    assert d["version"] == 2
    assert list(d) == ["version", "buckets", "transfers", "lookups", "manager", "hits", "remote"]
    assert list(d["transfers"]) == list(Direction.ALL)
    w, r = d["transfers"][W], d["transfers"][R]
    assert (w["ops"], w["failed_ops"], w["blocks"], w["bytes"], w["time_ns"]) == (
        1, 0, 2, 8_388_704, 4_000_000,
    )  # fmt: skip
    assert [i for i, c in enumerate(w["size_counts"]) if c] == [6]
    assert [i for i, c in enumerate(w["duration_counts"]) if c] == [7]
    assert [i for i, c in enumerate(w["throughput_counts"]) if c] == [4]
    assert w["throughput_sum"] == 2_097_176_000
    assert (r["ops"], r["failed_ops"], r["blocks"], r["bytes"], r["failed_bytes"]) == (
        1, 1, 1, 4_194_304, 4_194_304,
    )  # fmt: skip
    assert d["hits"] == {
        "cpu": {"blocks": 300, "tokens": 4800},
        "remote": {"blocks": 12, "tokens": 192},
    }
    assert d["remote"] == {
        "lookups": {"blocks_queried": 20, "blocks_hit": 12},
        "errors": {**dict.fromkeys(ERROR_KINDS, 0), "timeout": 2, "corrupt": 1},
        "writes_dropped": 1,
        "write_queue_blocks": 5,
    }
    # The GPU link and the CPU tier's own lookups are untouched.
    assert d["transfers"]["GPU_to_CPU"] == empty_dict()["transfers"]["GPU_to_CPU"]
    assert d["lookups"] == empty_dict()["lookups"]
    assert OffloadingConnectorStats.from_dict(d).to_dict() == d


def test_record_hits_defaults_to_no_remote_hits() -> None:
    acc = StatsAccumulator()
    acc.record_hits(4, 64)
    assert acc.take().to_dict()["hits"] == {
        "cpu": {"blocks": 4, "tokens": 64},
        "remote": {"blocks": 0, "tokens": 0},
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda a: a.record_remote_error("eof"),
            'unknown remote error kind "eof": expected one of "connection", "timeout", "auth", '
            '"oom", "server", "truncated", "foreign", "corrupt"',
        ),
        (lambda a: a.record_remote_error(3), "kind must be a str, got int"),
        (lambda a: a.record_remote_error("oom", -1), "n must be a non-negative int, got -1"),
        (
            lambda a: a.record_remote_lookup(2, 3),
            "a remote lookup cannot hit more than it queried: blocks 3/2",
        ),
        (lambda a: a.record_hits(1, True), "cpu_tokens must be an int, got bool"),
        (lambda a: a.record_hits(1, 2, 2**64), "remote_blocks must be an int in 0..=2^64-1"),
        (lambda a: a.record_writes_dropped(1.0), "n must be an int, got float"),
        (lambda a: a.set_write_queue(-3), "blocks must be a non-negative int, got -3"),
    ],
)
def test_bad_records_raise_and_record_nothing(call: Any, message: str) -> None:
    acc = StatsAccumulator()
    acc.set_write_queue(9)
    acc.record_writes_dropped(2)
    with pytest.raises(InvalidArgumentError) as info:
        call(acc)
    assert str(info.value).startswith(message)
    d = acc.take().to_dict()
    assert d["remote"] == {
        "lookups": {"blocks_queried": 0, "blocks_hit": 0},
        "errors": dict.fromkeys(ERROR_KINDS, 0),
        "writes_dropped": 2,
        "write_queue_blocks": 9,
    }
    assert d["hits"] == empty_dict()["hits"]


def test_kinds_and_tiers_come_from_the_core() -> None:
    assert OffloadingConnectorStats.REMOTE_ERROR_KINDS == ERROR_KINDS
    assert OffloadingConnectorStats.TIERS == ("cpu", "remote")


def test_the_job_tracker_refuses_remote_directions() -> None:
    acc = StatsAccumulator()
    t = JobTracker(acc)
    with pytest.raises(InvalidArgumentError) as info:
        t.submit("r", W, 1, 100)
    assert str(info.value) == (
        'the JobTracker tracks GPU transfers ("GPU_to_CPU", "CPU_to_GPU"), not "CPU_to_REMOTE"; '
        "record remote-tier transfers with StatsAccumulator.record_transfer"
    )
    assert t.num_pending == 0
    assert acc.take().is_empty()


def test_a_version_1_dict_still_reads_with_the_remote_parts_zero() -> None:
    v1 = interval_a()
    s = OffloadingConnectorStats.from_dict(v1)
    d = s.to_dict()
    assert d["version"] == 2
    for key in ("transfers", "lookups", "manager"):
        for name, value in v1[key].items():
            assert d[key][name] == value
    assert d["transfers"][W] == d["transfers"][R] == empty_dict()["transfers"][W]
    assert d["hits"] == empty_dict()["hits"] and d["remote"] == empty_dict()["remote"]
    # A version-1 dict has version 1's keys exactly.
    with pytest.raises(InvalidArgumentError) as info:
        OffloadingConnectorStats.from_dict({**v1_dict(), "hits": empty_dict()["hits"]})
    assert str(info.value).startswith('invalid stats dict: stats dict: unknown key "hits"')


def test_a_version_1_encoding_still_reads() -> None:
    s = OffloadingConnectorStats.from_dict(interval_a())
    v1 = b"KVOS" + (1).to_bytes(4, "little") + s.to_bytes()[8:1016]
    assert OffloadingConnectorStats.from_bytes(v1) == s
    assert len(s.to_bytes()) == 2072


def test_aggregate_sums_the_queue_gauges_and_accumulate_replaces_them() -> None:
    a, b = remote_interval(queue=5), remote_interval(queue=7)
    total = OffloadingConnectorStats().accumulate(a).accumulate(b)
    assert total.to_dict()["remote"]["write_queue_blocks"] == 7
    assert total.to_dict()["remote"]["errors"]["timeout"] == 4
    ranks = remote_interval(queue=5).aggregate(b)
    assert ranks.to_dict()["remote"]["write_queue_blocks"] == 12


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, {"engine": "0", **labels})


def test_the_exporter_shows_which_tier_served_the_hit_and_the_remote_tier() -> None:
    reg = CollectorRegistry()
    exporter = OffloadPromMetrics(reg)
    exporter.observe(remote_interval(queue=5))
    exporter.observe(remote_interval(queue=3, scale=2).to_dict())
    assert sample(reg, "kvoff_hit_blocks_total", tier="cpu") == 900
    assert sample(reg, "kvoff_hit_blocks_total", tier="remote") == 36
    assert sample(reg, "kvoff_hit_tokens_total", tier="cpu") == 14_400
    assert sample(reg, "kvoff_hit_tokens_total", tier="remote") == 576
    assert sample(reg, "kvoff_remote_bytes_total", direction=W) == 3 * 8_388_704
    assert sample(reg, "kvoff_remote_ops_total", direction=R) == 3
    assert sample(reg, "kvoff_remote_failed_ops_total", direction=R) == 3
    assert sample(reg, "kvoff_remote_failed_bytes_total", direction=R) == 3 * 4_194_304
    assert sample(reg, "kvoff_remote_blocks_total", direction=W) == 6
    assert sample(reg, "kvoff_remote_seconds_total", direction=W) == 12_000_000 / 1e9
    assert sample(reg, "kvoff_remote_size_bytes_bucket", direction=W, le="5e+06") == 0
    assert sample(reg, "kvoff_remote_size_bytes_bucket", direction=W, le="1e+07") == 3
    assert sample(reg, "kvoff_remote_duration_seconds_bucket", direction=R, le="0.0025") == 3
    assert sample(reg, "kvoff_remote_throughput_bytes_per_second_count", direction=W) == 3
    assert sample(reg, "kvoff_remote_lookup_blocks_total") == 60
    assert sample(reg, "kvoff_remote_lookup_hit_blocks_total") == 36
    assert sample(reg, "kvoff_remote_errors_total", kind="timeout") == 6
    assert sample(reg, "kvoff_remote_errors_total", kind="corrupt") == 3
    assert sample(reg, "kvoff_remote_errors_total", kind="auth") == 0
    assert sample(reg, "kvoff_remote_writes_dropped_total") == 3
    # A gauge: the latest interval's value.
    assert sample(reg, "kvoff_remote_write_queue_blocks") == 3
    # The GPU link's series carry only its own directions.
    assert sample(reg, "kvoff_transfer_bytes_total", direction=W) is None
    assert sample(reg, "kvoff_transfer_bytes_total", direction="GPU_to_CPU") == 0


def test_the_vllm_series_carry_only_the_gpu_directions() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg, vllm_compatible=True).observe(remote_interval())
    vllm = [f for f in reg.collect() if f.name.startswith("vllm:")]
    # The deprecated families by transfer_type; 0.33.0's flat ones say load / store by name.
    types = {
        s.labels["transfer_type"] for f in vllm for s in f.samples if "transfer_type" in s.labels
    }
    assert types == {"GPU_to_CPU", "CPU_to_GPU"}
    flat = {f.name for f in vllm if not any("transfer_type" in s.labels for s in f.samples)}
    assert flat == {
        f"vllm:kv_offload_{verb}_{what}"
        for verb in ("load", "store")
        for what in ("bytes", "time", "size")
    } | {"vllm:kv_offload_allocation_failure", "vllm:kv_offload_cpu_cache_usage_perc"}


def test_the_log_line_adds_a_remote_part_only_when_the_tier_was_busy() -> None:
    assert format_stats(remote_interval()) == (
        "KV offload: GPU_to_CPU idle, CPU_to_GPU idle, hits 0/0 blocks, remote: "
        "CPU_to_REMOTE 8.4 MB in 4.0 ms (2.1 GB/s, 1 op), "
        "REMOTE_to_CPU 4.2 MB in 2.0 ms (2.1 GB/s, 1 op, 1 failed), "
        "served 300 cpu / 12 remote blocks, 3 errors (2 timeout, 1 corrupt), 1 write dropped"
    )
    # A queue gauge alone is not activity; hits served only by the CPU tier are not either.
    acc = StatsAccumulator()
    acc.set_write_queue(4)
    acc.record_hits(2, 32)
    assert (
        format_stats(acc.take()) == "KV offload: GPU_to_CPU idle, CPU_to_GPU idle, hits 0/0 blocks"
    )
