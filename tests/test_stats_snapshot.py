"""OffloadingConnectorStats: exact reduce(), aggregate, plain-data forms and their validation."""

from __future__ import annotations

import copy
import json
import pickle
import re
from typing import Any

import pytest

from _stats_model import ERROR_KINDS, Transfer, empty_dict
from kvoff import InvalidArgumentError, OffloadingConnectorStats, StatsAccumulator
from stats_dicts import DURATION_BOUNDS, SIZE_BOUNDS, THROUGHPUT_BOUNDS

SCRIPT = [
    Transfer("GPU_to_CPU", 1_000_000, 1_000_000, num_blocks=4),
    Transfer("GPU_to_CPU", 3_000_000, 2_000_000, num_blocks=12),
    Transfer("GPU_to_CPU", 2_000_000, 3_000_000, num_blocks=8),
    Transfer("GPU_to_CPU", 500, 500_000_000, success=False, num_blocks=1),
    Transfer("CPU_to_GPU", 262_144, 10_000, num_blocks=1),
    Transfer("CPU_to_GPU", 4_096, 0, num_blocks=1),
]


def scripted(**gauges: int) -> OffloadingConnectorStats:
    acc = StatsAccumulator()
    for t in SCRIPT:
        acc.record_transfer(t.direction, t.num_bytes, t.seconds, t.success, t.num_blocks)
    acc.record_lookup(10, 4, 160, 64)
    acc.record_stored(3)
    acc.record_evicted(1)
    acc.record_allocation_failure()
    acc.record_allocation_failure()
    acc.set_occupancy(
        gauges.get("capacity", 100), gauges.get("resident", 50), gauges.get("pinned", 5)
    )
    return acc.take()


def test_reduce_is_exact_for_a_scripted_interval() -> None:
    assert scripted().reduce() == {
        "GPU_to_CPU_total_bytes": 6_000_000,
        "GPU_to_CPU_total_time": 0.006,
        "GPU_to_CPU_ops": 3,
        "GPU_to_CPU_failed_ops": 1,
        "GPU_to_CPU_failed_bytes": 500,
        "GPU_to_CPU_blocks": 24,
        "GPU_to_CPU_avg_bytes": 2_000_000.0,
        "GPU_to_CPU_avg_time": 0.002,
        # Per-transfer 1e9, 1.5e9 and 666_666_667 (rounded) B/s.
        "GPU_to_CPU_avg_throughput": 3_166_666_667 / 3,
        "GPU_to_CPU_throughput": 1e9,
        "CPU_to_GPU_total_bytes": 266_240,
        "CPU_to_GPU_total_time": 1e-5,
        "CPU_to_GPU_ops": 2,
        "CPU_to_GPU_failed_ops": 0,
        "CPU_to_GPU_failed_bytes": 0,
        "CPU_to_GPU_blocks": 2,
        "CPU_to_GPU_avg_bytes": 133_120.0,
        "CPU_to_GPU_avg_time": 5e-6,
        # The zero-duration load has no throughput; the other moved 262144 B in 10 µs.
        "CPU_to_GPU_avg_throughput": 26_214_400_000.0,
        "CPU_to_GPU_throughput": 26_624_000_000.0,
        "blocks_queried": 10,
        "blocks_hit": 4,
        "hit_rate": 0.4,
        "tokens_queried": 160,
        "tokens_hit": 64,
        "token_hit_rate": 0.4,
        "blocks_stored": 3,
        "blocks_evicted": 1,
        "allocation_failures": 2,
        "capacity_blocks": 100,
        "resident_blocks": 50,
        "pinned_blocks": 5,
        **_idle_remote_direction("CPU_to_REMOTE"),
        **_idle_remote_direction("REMOTE_to_CPU"),
        "cpu_hit_blocks": 0,
        "cpu_hit_tokens": 0,
        "remote_hit_blocks": 0,
        "remote_hit_tokens": 0,
        "remote_lookup_blocks_queried": 0,
        "remote_lookup_blocks_hit": 0,
        "remote_lookup_hit_rate": 0.0,
        **{f"remote_errors_{kind}": 0 for kind in ERROR_KINDS},
        "remote_writes_dropped": 0,
        "remote_write_queue_blocks": 0,
    }


def _idle_remote_direction(d: str) -> dict[str, int | float]:
    ints = ("total_bytes", "ops", "failed_ops", "failed_bytes", "blocks")
    floats = ("total_time", "avg_bytes", "avg_time", "avg_throughput", "throughput")
    return {**{f"{d}_{k}": 0 for k in ints}, **{f"{d}_{k}": 0.0 for k in floats}}


def test_reduce_is_exact_for_the_remote_tier() -> None:
    acc = StatsAccumulator()
    # Two 4 MiB + 48-byte values written in one 2 ms round trip; one 4 MiB read in 1 ms.
    acc.record_transfer("CPU_to_REMOTE", 8_388_704, 2e-3, num_blocks=2)
    acc.record_transfer("REMOTE_to_CPU", 4_194_304, 1e-3, num_blocks=1)
    acc.record_transfer("REMOTE_to_CPU", 4_194_304, 0.0, success=False, num_blocks=1)
    acc.record_hits(6, 96, 2, 32)
    acc.record_remote_lookup(10, 4)
    acc.record_remote_error("timeout", 2)
    acc.record_remote_error("corrupt")
    acc.record_writes_dropped(3)
    acc.set_write_queue(17)
    r = acc.take().reduce()
    remote = {k: v for k, v in r.items() if "REMOTE" in k or k.startswith(("remote", "cpu_hit"))}
    assert remote == {
        "CPU_to_REMOTE_total_bytes": 8_388_704,
        "CPU_to_REMOTE_total_time": 0.002,
        "CPU_to_REMOTE_ops": 1,
        "CPU_to_REMOTE_failed_ops": 0,
        "CPU_to_REMOTE_failed_bytes": 0,
        "CPU_to_REMOTE_blocks": 2,
        "CPU_to_REMOTE_avg_bytes": 8_388_704.0,
        "CPU_to_REMOTE_avg_time": 0.002,
        "CPU_to_REMOTE_avg_throughput": 4_194_352_000.0,
        # Total bytes over total ns, times 1e9, in floats (as reduce() computes it).
        "CPU_to_REMOTE_throughput": 8_388_704 / 2_000_000 * 1e9,
        "REMOTE_to_CPU_total_bytes": 4_194_304,
        "REMOTE_to_CPU_total_time": 0.001,
        "REMOTE_to_CPU_ops": 1,
        "REMOTE_to_CPU_failed_ops": 1,
        "REMOTE_to_CPU_failed_bytes": 4_194_304,
        "REMOTE_to_CPU_blocks": 1,
        "REMOTE_to_CPU_avg_bytes": 4_194_304.0,
        "REMOTE_to_CPU_avg_time": 0.001,
        "REMOTE_to_CPU_avg_throughput": 4_194_304_000.0,
        "REMOTE_to_CPU_throughput": 4_194_304_000.0,
        "cpu_hit_blocks": 6,
        "cpu_hit_tokens": 96,
        "remote_hit_blocks": 2,
        "remote_hit_tokens": 32,
        "remote_lookup_blocks_queried": 10,
        "remote_lookup_blocks_hit": 4,
        "remote_lookup_hit_rate": 0.4,
        "remote_errors_connection": 0,
        "remote_errors_timeout": 2,
        "remote_errors_auth": 0,
        "remote_errors_oom": 0,
        "remote_errors_server": 0,
        "remote_errors_truncated": 0,
        "remote_errors_foreign": 0,
        "remote_errors_corrupt": 1,
        "remote_writes_dropped": 3,
        "remote_write_queue_blocks": 17,
    }
    # The GPU link saw nothing.
    assert r["GPU_to_CPU_ops"] == r["CPU_to_GPU_ops"] == r["blocks_queried"] == 0


def test_reduce_types_and_empty_values() -> None:
    r = OffloadingConnectorStats().reduce()
    assert r["GPU_to_CPU_total_bytes"] == 0 and type(r["GPU_to_CPU_total_bytes"]) is int
    assert r["GPU_to_CPU_total_time"] == 0.0 and type(r["GPU_to_CPU_total_time"]) is float
    assert r["hit_rate"] == 0.0 and r["CPU_to_GPU_avg_throughput"] == 0.0
    assert all(v == 0 for v in r.values())


def test_aggregate_adds_counts_and_gauges_and_returns_self() -> None:
    a = scripted(capacity=100, resident=50, pinned=5)
    b = scripted(capacity=0, resident=0, pinned=0)
    assert a.aggregate(b) is a
    r = a.reduce()
    assert (r["GPU_to_CPU_ops"], r["GPU_to_CPU_total_bytes"], r["blocks_hit"]) == (6, 12_000_000, 8)
    assert r["GPU_to_CPU_total_time"] == 0.012
    assert (r["capacity_blocks"], r["resident_blocks"], r["pinned_blocks"]) == (100, 50, 5)
    expected = scripted().to_dict()
    doubled = a.to_dict()
    assert doubled["transfers"]["GPU_to_CPU"]["size_counts"] == [
        2 * c for c in expected["transfers"]["GPU_to_CPU"]["size_counts"]
    ]
    assert b == scripted(capacity=0, resident=0, pinned=0)


def test_aggregate_with_itself_doubles() -> None:
    s = scripted()
    s.aggregate(s)
    assert s.reduce()["CPU_to_GPU_ops"] == 4
    assert s.reduce()["capacity_blocks"] == 200


def test_aggregate_overflow_raises_and_changes_nothing() -> None:
    big = empty_dict()
    big["transfers"]["CPU_to_GPU"]["bytes"] = 2**64 - 1
    s = scripted()
    before = s.to_dict()
    with pytest.raises(InvalidArgumentError, match="overflows"):
        s.aggregate(OffloadingConnectorStats.from_dict(big))
    assert s.to_dict() == before


def test_accumulate_adds_counters_replaces_gauges_and_returns_self() -> None:
    total = scripted(capacity=100, resident=50, pinned=5)
    interval = scripted(capacity=80, resident=7, pinned=1)
    assert total.accumulate(interval) is total
    r = total.reduce()
    assert (r["GPU_to_CPU_ops"], r["GPU_to_CPU_total_bytes"], r["blocks_hit"]) == (6, 12_000_000, 8)
    assert (r["blocks_stored"], r["allocation_failures"]) == (6, 4)
    # Gauges are the interval's (latest) values, not sums.
    assert (r["capacity_blocks"], r["resident_blocks"], r["pinned_blocks"]) == (80, 7, 1)
    assert total.direction("GPU_to_CPU").size_counts == tuple(
        2 * c for c in scripted().to_dict()["transfers"]["GPU_to_CPU"]["size_counts"]
    )
    assert interval == scripted(capacity=80, resident=7, pinned=1)


def test_accumulate_saturates_where_aggregate_refuses() -> None:
    big = empty_dict()
    big["transfers"]["CPU_to_GPU"]["bytes"] = 2**64 - 1
    big["lookups"]["tokens_hit"] = 2**64 - 2
    total = scripted()
    total.accumulate(OffloadingConnectorStats.from_dict(big))
    d = total.direction("CPU_to_GPU")
    assert (d.bytes, d.ops) == (2**64 - 1, 2)
    assert total.reduce()["tokens_hit"] == 2**64 - 1
    # Gauges replaced by the interval's zeros.
    assert total.reduce()["capacity_blocks"] == 0


def test_direction_reads_one_direction_typed() -> None:
    s = scripted()
    g = s.direction("GPU_to_CPU")
    assert (g.direction, g.ops, g.failed_ops, g.blocks, g.bytes, g.failed_bytes, g.time_ns) == (
        "GPU_to_CPU",
        3,
        1,
        24,
        6_000_000,
        500,
        6_000_000,
    )
    plain = s.to_dict()["transfers"]["GPU_to_CPU"]
    assert g.size_counts == tuple(plain["size_counts"])
    assert g.duration_counts == tuple(plain["duration_counts"])
    assert g.throughput_counts == tuple(plain["throughput_counts"])
    assert g.throughput_sum == 3_166_666_667
    assert g == scripted().direction("GPU_to_CPU")
    assert g != s.direction("CPU_to_GPU")
    assert repr(g) == (
        "DirectionStats(GPU_to_CPU: 3 ops, 1 failed, 24 blocks, 6000000 bytes, 6000000 ns)"
    )
    with pytest.raises(AttributeError):
        g.ops = 5  # type: ignore[misc]
    with pytest.raises(InvalidArgumentError, match='unknown transfer direction "sideways"'):
        s.direction("sideways")


def test_buckets_are_the_core_bounds_and_what_to_dict_carries() -> None:
    buckets = OffloadingConnectorStats.buckets()
    assert buckets == {
        k: tuple(v) for k, v in OffloadingConnectorStats().to_dict()["buckets"].items()
    }
    # The bounds of docs/ARCHITECTURE.md, copied independently into tests/stats_dicts.py.
    assert list(buckets["size_bytes"]) == SIZE_BOUNDS
    assert list(buckets["duration_seconds"]) == DURATION_BOUNDS
    assert list(buckets["throughput_bytes_per_second"]) == THROUGHPUT_BOUNDS
    buckets["size_bytes"] = ()
    assert len(OffloadingConnectorStats.buckets()["size_bytes"]) == 17
    assert OffloadingConnectorStats.VERSION == 2


def test_aggregate_wrong_type() -> None:
    with pytest.raises(TypeError):
        OffloadingConnectorStats().aggregate({})  # type: ignore[arg-type]


def test_empty_reset_clone_and_reset() -> None:
    s = scripted()
    assert not s.is_empty()
    copy_ = s.clone_and_reset()
    assert s.is_empty() and s == OffloadingConnectorStats()
    assert copy_ == scripted()
    copy_.reset()
    assert copy_.is_empty()
    gauges_only = StatsAccumulator()
    gauges_only.set_occupancy(1, 0, 0)
    assert not gauges_only.take().is_empty()


def test_data_is_a_fresh_to_dict_view() -> None:
    s = scripted()
    d = s.data
    assert d == s.to_dict()
    d["transfers"]["GPU_to_CPU"]["ops"] = 999
    assert s.to_dict()["transfers"]["GPU_to_CPU"]["ops"] == 3


def test_round_trips_pickle_json_bytes_copy() -> None:
    s = scripted()
    assert pickle.loads(pickle.dumps(s)) == s
    assert OffloadingConnectorStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert OffloadingConnectorStats(s.to_dict()) == s
    assert OffloadingConnectorStats(s.to_bytes()) == s
    assert OffloadingConnectorStats.from_bytes(s.to_bytes()) == s
    c = copy.copy(s)
    assert c == s and c is not s
    assert copy.deepcopy(s) == s
    assert s != OffloadingConnectorStats()
    assert s != "not stats"
    with pytest.raises(TypeError):
        hash(s)


def test_serialized_size_does_not_grow_with_transfers() -> None:
    sizes = {}
    for n in (10, 100_000):
        acc = StatsAccumulator()
        for i in range(n):
            acc.record_transfer("GPU_to_CPU" if i % 2 else "CPU_to_GPU", 2_000_000 + i, 1e-3)
        s = acc.take()
        zeroed = json.dumps(s.to_dict(), default=str)
        for_shape = json.loads(zeroed)
        sizes[n] = (len(pickle.dumps(s)), len(s.to_bytes()), _shape(for_shape), len(zeroed))
    assert sizes[10][:3] == sizes[100_000][:3]
    # JSON writes numbers in decimal, so its length moves only with the digits of the counts:
    # never beyond every count at the 20 digits of 2^64 - 1.
    assert sizes[100_000][3] <= _max_json_len()


def _shape(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_shape(x) for x in v]
    return type(v).__name__


def _max_json_len() -> int:
    d = empty_dict()
    for t in d["transfers"].values():
        for k, v in t.items():
            t[k] = [2**64 - 1] * len(v) if isinstance(v, list) else 2**64 - 1
    for section in ("lookups", "manager"):
        d[section] = dict.fromkeys(d[section], 2**64 - 1)
    return len(json.dumps(d))


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    d = scripted().to_dict()
    target: Any = d
    for key in path[:-1]:
        target = target[key]
    last = path[-1]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return d


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["version"], 3, "version: unsupported format version 3 (this build reads 1 and 2)"),
        (["version"], "1", "version: expected int, got str"),
        (["version"], True, "version: expected int, got bool"),
        (["version"], _DELETE, "version: missing key"),
        (["manager"], _DELETE, "manager: missing key"),
        (["transfers", "CPU_to_GPU"], _DELETE, "transfers.CPU_to_GPU: missing key"),
        (["transfers", "GPU_to_CPU", "time_ns"], _DELETE, "transfers.GPU_to_CPU.time_ns: missing"),
        (["lookups", "tokens_hit"], _DELETE, "lookups.tokens_hit: missing key"),
        (["transfers", "GPU_to_CPU", "ops"], -1, "transfers.GPU_to_CPU.ops: negative count -1"),
        (["manager", "pinned_blocks"], -7, "manager.pinned_blocks: negative count -7"),
        (
            ["lookups", "blocks_hit"],
            2**64,
            "lookups.blocks_hit: count 18446744073709551616 exceeds",
        ),
        (["transfers", "GPU_to_CPU", "bytes"], 1.0, "GPU_to_CPU.bytes: expected int, got float"),
        (
            ["transfers", "GPU_to_CPU", "bytes"],
            None,
            "GPU_to_CPU.bytes: expected int, got NoneType",
        ),
        (["transfers", "GPU_to_CPU", "blocks"], False, "GPU_to_CPU.blocks: expected int, got bool"),
        (["transfers", "CPU_to_GPU", "size_counts", 3], -5, "CPU_to_GPU.size_counts[3]: negative"),
        (
            ["transfers", "CPU_to_GPU", "size_counts", 0],
            "0",
            "size_counts[0]: expected int, got str",
        ),
        (["transfers", "CPU_to_GPU", "duration_counts"], [0] * 18, "expected 19 bucket counts"),
        (["transfers", "CPU_to_GPU", "throughput_counts"], 0, "expected list of 14 ints, got int"),
        (["buckets", "size_bytes", 0], 4095, "buckets.size_bytes: bucket layout differs"),
        (
            ["buckets", "duration_seconds"],
            [1e-5],
            "buckets.duration_seconds: bucket layout differs",
        ),
        (["buckets", "throughput_bytes_per_second"], "x", "expected list of bounds, got str"),
        (["buckets", "size_bytes"], _DELETE, "buckets.size_bytes: missing key"),
        (["lookups"], [], "lookups: expected dict, got list"),
        (["transfers", "sideways"], {}, 'transfers: unknown key "sideways"'),
        (["extra"], 0, 'stats dict: unknown key "extra"'),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_key(
    path: list[str | int], value: Any, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        OffloadingConnectorStats.from_dict(_with(path, value))
    assert message in str(info.value)
    assert str(info.value).startswith("invalid stats dict: ")


def test_from_dict_rejects_non_dicts_and_non_str_keys() -> None:
    with pytest.raises(InvalidArgumentError, match="stats dict: expected dict, got list"):
        OffloadingConnectorStats.from_dict([])  # type: ignore[arg-type]
    d: dict[Any, Any] = scripted().to_dict()
    d[1] = d.pop("version")
    with pytest.raises(InvalidArgumentError, match='unknown key "1"'):
        OffloadingConnectorStats.from_dict(d)


def test_from_dict_accepts_float_bounds_and_tuples() -> None:
    d = scripted().to_dict()
    d["buckets"]["size_bytes"] = tuple(float(b) for b in d["buckets"]["size_bytes"])
    d["transfers"]["GPU_to_CPU"]["size_counts"] = tuple(d["transfers"]["GPU_to_CPU"]["size_counts"])
    assert OffloadingConnectorStats.from_dict(d) == scripted()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", 'missing b"KVOS" header'),
        (b"JSON{}..", 'missing b"KVOS" header'),
        (
            b"KVOS\x03\x00\x00\x00",
            "unsupported format version 3 (this build reads versions 1 and 2)",
        ),
        (b"KVOS\x01\x00\x00\x00\x00", "expected 1016 bytes for version 1, got 9"),
        (b"KVOS\x02\x00\x00\x00\x00", "expected 2072 bytes for version 2, got 9"),
    ],
)
def test_from_bytes_rejects_bad_input(blob: bytes, message: str) -> None:
    # Version 1: 8 header bytes + 126 counters of 8 bytes; version 2: 258 counters.
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        OffloadingConnectorStats.from_bytes(blob)


# --- reliability: no arithmetic on untrusted counters may fail; the doors say what they accept ---

U64_MAX = 2**64 - 1


def _histograms_at_max() -> dict[str, Any]:
    d = empty_dict()
    t = d["transfers"]["GPU_to_CPU"]
    for key in ("size_counts", "duration_counts", "throughput_counts"):
        t[key] = [U64_MAX] * len(t[key])
    t["throughput_sum"] = U64_MAX
    t["ops"] = t["bytes"] = t["time_ns"] = U64_MAX
    return d


def test_reduce_of_histogram_counts_summing_past_2_64_does_not_panic() -> None:
    from_dict = OffloadingConnectorStats.from_dict(_histograms_at_max())
    for s in (
        from_dict,
        OffloadingConnectorStats.from_bytes(from_dict.to_bytes()),
        pickle.loads(pickle.dumps(from_dict)),
    ):
        r = s.reduce()
        # (2^64 - 1) over 14 * (2^64 - 1) observations, each rounded to a float first.
        assert r["GPU_to_CPU_avg_throughput"] == 1 / 14
        assert r["GPU_to_CPU_avg_bytes"] == 1.0
        assert r["GPU_to_CPU_throughput"] == 1e9
        assert r["GPU_to_CPU_ops"] == U64_MAX and type(r["GPU_to_CPU_ops"]) is int


def test_constructor_takes_bytes_like_and_names_what_it_takes() -> None:
    s = scripted()
    blob = s.to_bytes()
    assert OffloadingConnectorStats(bytearray(blob)) == s
    assert OffloadingConnectorStats(memoryview(blob)) == s
    assert OffloadingConnectorStats.from_bytes(bytearray(blob)) == s
    assert OffloadingConnectorStats.from_bytes(memoryview(blob)[0:]) == s
    with pytest.raises(InvalidArgumentError) as info:
        OffloadingConnectorStats(42)  # type: ignore[arg-type]
    assert str(info.value) == (
        "OffloadingConnectorStats() takes None, a to_dict() dict, or the to_bytes() form "
        "(bytes, bytearray or memoryview); got int"
    )
    with pytest.raises(InvalidArgumentError) as info:
        OffloadingConnectorStats.from_bytes("KVOS")  # type: ignore[arg-type]
    assert str(info.value) == "stats bytes: expected bytes, bytearray or memoryview, got str"
    with pytest.raises(InvalidArgumentError, match="expected 2072 bytes for version 2, got 2071"):
        OffloadingConnectorStats(bytearray(blob[:-1]))


def test_a_key_with_a_lone_surrogate_is_an_invalid_argument() -> None:
    d: dict[str, Any] = scripted().to_dict()
    d["\udcff"] = 0
    with pytest.raises(InvalidArgumentError) as info:
        OffloadingConnectorStats.from_dict(d)
    assert "invalid stats dict: stats dict: unknown key \"'\\\\udcff'\"" in str(info.value)
    nested: dict[str, Any] = scripted().to_dict()
    nested["lookups"]["blocks_\ud800hit"] = nested["lookups"].pop("blocks_hit")
    with pytest.raises(InvalidArgumentError, match=r"^invalid stats dict: lookups: unknown key"):
        OffloadingConnectorStats(nested)
