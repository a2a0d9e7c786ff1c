"""OffloadPromMetrics: series present from the start, exact cumulative values, validation."""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kvoff import OffloadingConnectorStats
from kvoff.errors import InvalidArgumentError, InvalidStateError, KvoffError
from kvoff.metrics import OffloadPromMetrics, UnknownEngineError, format_stats
from kvoff.metrics.exporter import (
    DEFAULT_MAX_ENGINES,
    MAX_ENGINE_LABEL_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
)
from metrics_scenario import C2G, G2C, interval_a, interval_b, interval_c
from stats_dicts import SnapshotObject, Transfer, v1_dict

SIZE_LE = [
    "4096.0", "16384.0", "65536.0", "262144.0", "1e+06", "5e+06", "1e+07", "2e+07", "4e+07",
    "6e+07", "8e+07", "1e+08", "1.5e+08", "2e+08", "5e+08", "1e+09", "4e+09", "+Inf",
]  # fmt: skip
DURATION_LE = [
    "1e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf",
]  # fmt: skip
THROUGHPUT_LE = [
    "1e+08", "5e+08", "1e+09", "2e+09", "5e+09", "1e+10", "2e+10", "3e+10", "4e+10", "5e+10",
    "6e+10", "8e+10", "1e+11", "+Inf",
]  # fmt: skip

DIRECTION_COUNTERS = [
    "kvoff_transfer_ops_total",
    "kvoff_transfer_failed_ops_total",
    "kvoff_transfer_blocks_total",
    "kvoff_transfer_bytes_total",
    "kvoff_transfer_failed_bytes_total",
    "kvoff_transfer_seconds_total",
]
HISTOGRAMS = {
    "kvoff_transfer_size_bytes": SIZE_LE,
    "kvoff_transfer_duration_seconds": DURATION_LE,
    "kvoff_transfer_throughput_bytes_per_second": THROUGHPUT_LE,
}
ENGINE_COUNTERS = [
    "kvoff_lookup_blocks_total",
    "kvoff_lookup_hit_blocks_total",
    "kvoff_lookup_tokens_total",
    "kvoff_lookup_hit_tokens_total",
    "kvoff_cpu_blocks_stored_total",
    "kvoff_cpu_blocks_evicted_total",
    "kvoff_cpu_allocation_failures_total",
]
GAUGES = ["kvoff_cpu_capacity_blocks", "kvoff_cpu_resident_blocks", "kvoff_cpu_pinned_blocks"]
REMOTE_DIRECTIONS = ("CPU_to_REMOTE", "REMOTE_to_CPU")
TIERS = ("cpu", "remote")
ERROR_KINDS = ("connection", "timeout", "auth", "oom", "server", "truncated", "foreign", "corrupt")
REMOTE_ENGINE_SERIES = [
    "kvoff_remote_lookup_blocks_total",
    "kvoff_remote_lookup_hit_blocks_total",
    "kvoff_remote_writes_dropped_total",
    "kvoff_remote_write_queue_blocks",
]


def remote(name: str) -> str:
    """The remote subsystem's family of the same noun as a transfer family."""
    return name.replace("kvoff_transfer_", "kvoff_remote_")


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def buckets(reg: CollectorRegistry, name: str, les: list[str], **labels: str) -> list[float | None]:
    return [reg.get_sample_value(f"{name}_bucket", {**labels, "le": le}) for le in les]


def all_samples(reg: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in reg.collect()
        for s in family.samples
    }


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def observed(reg: CollectorRegistry) -> CollectorRegistry:
    exporter = OffloadPromMetrics(reg, engines=("0", "1"))
    exporter.observe(interval_a(), engine="0")
    exporter.observe(interval_b(), engine="0")
    exporter.observe(interval_c(), engine="1")
    return reg


def test_every_series_is_zero_before_any_observe(reg: CollectorRegistry) -> None:
    OffloadPromMetrics(reg, labels={"model_name": "m"}, engines=("0", "1"))
    got = all_samples(reg)

    expected: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    for engine in ("0", "1"):
        base = {"model_name": "m", "engine": engine}
        for d, rename in [(G2C, str), (C2G, str), *((d, remote) for d in REMOTE_DIRECTIONS)]:
            labels = {**base, "direction": d}
            expected |= {(rename(n), frozenset(labels.items())) for n in DIRECTION_COUNTERS}
            for name, les in HISTOGRAMS.items():
                expected |= {
                    (f"{rename(name)}_bucket", frozenset({**labels, "le": le}.items()))
                    for le in les
                }
                expected |= {
                    (f"{rename(name)}_{s}", frozenset(labels.items())) for s in ("count", "sum")
                }
        expected |= {(n, frozenset(base.items())) for n in ENGINE_COUNTERS + GAUGES}
        expected |= {(n, frozenset(base.items())) for n in REMOTE_ENGINE_SERIES}
        for tier in TIERS:
            tier_labels = frozenset({**base, "tier": tier}.items())
            expected |= {(f"kvoff_hit_{x}_total", tier_labels) for x in ("blocks", "tokens")}
        expected |= {
            ("kvoff_remote_errors_total", frozenset({**base, "kind": k}.items()))
            for k in ERROR_KINDS
        }

    assert set(got) == expected
    assert all(v == 0 for v in got.values())


def test_transfer_counters_are_exact_over_two_intervals_and_two_engines(
    observed: CollectorRegistry,
) -> None:
    r = observed
    g0 = {"engine": "0", "direction": G2C}
    c0 = {"engine": "0", "direction": C2G}
    g1 = {"engine": "1", "direction": G2C}
    c1 = {"engine": "1", "direction": C2G}

    assert sample(r, "kvoff_transfer_ops_total", **g0) == 4
    assert sample(r, "kvoff_transfer_failed_ops_total", **g0) == 1
    assert sample(r, "kvoff_transfer_blocks_total", **g0) == 1065
    assert sample(r, "kvoff_transfer_bytes_total", **g0) == 5_302_004_096
    assert sample(r, "kvoff_transfer_failed_bytes_total", **g0) == 1_000_000
    assert sample(r, "kvoff_transfer_seconds_total", **g0) == 20.01101

    assert sample(r, "kvoff_transfer_ops_total", **c0) == 2
    assert sample(r, "kvoff_transfer_failed_ops_total", **c0) == 2
    assert sample(r, "kvoff_transfer_blocks_total", **c0) == 33
    assert sample(r, "kvoff_transfer_bytes_total", **c0) == 150_262_144
    assert sample(r, "kvoff_transfer_failed_bytes_total", **c0) == 12_288
    assert sample(r, "kvoff_transfer_seconds_total", **c0) == 0.005262144

    for name in DIRECTION_COUNTERS:
        assert sample(r, name, **g1) == 0
    assert sample(r, "kvoff_transfer_ops_total", **c1) == 1
    assert sample(r, "kvoff_transfer_bytes_total", **c1) == 65_536
    assert sample(r, "kvoff_transfer_seconds_total", **c1) == 6.5536e-05


def test_histograms_are_exact_cumulative_buckets(observed: CollectorRegistry) -> None:
    r = observed
    g0 = {"engine": "0", "direction": G2C}
    c0 = {"engine": "0", "direction": C2G}
    c1 = {"engine": "1", "direction": C2G}
    size, dur, tput = HISTOGRAMS

    # 4096 (le 4096), 2e6 (le 5e6), 3e8 (le 5e8), 5e9 (+Inf)
    assert buckets(r, size, SIZE_LE, **g0) == [1] * 5 + [2] * 9 + [3] * 3 + [4]
    assert sample(r, f"{size}_count", **g0) == 4
    assert sample(r, f"{size}_sum", **g0) == 5_302_004_096
    # 1e-5, 1e-3, 1e-2, 20 s (+Inf)
    assert buckets(r, dur, DURATION_LE, **g0) == [1] * 5 + [2] * 3 + [3] * 10 + [4]
    assert sample(r, f"{dur}_sum", **g0) == 20.01101
    # 4.096e8 and 2.5e8 (le 5e8), 2e9 (le 2e9), 3e10 (le 3e10)
    assert buckets(r, tput, THROUGHPUT_LE, **g0) == [0, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4]
    assert sample(r, f"{tput}_sum", **g0) == 409_600_000 + 2e9 + 2.5e8 + 3e10

    # 262144 (le 262144), 1.5e8 (le 1.5e8)
    assert buckets(r, size, SIZE_LE, **c0) == [0, 0, 0] + [1] * 9 + [2] * 6
    # 2.62144e-4 (le 5e-4), 5e-3 (le 5e-3)
    assert buckets(r, dur, DURATION_LE, **c0) == [0] * 4 + [1] * 3 + [2] * 12
    # 1e9 (le 1e9), 3e10 (le 3e10)
    assert buckets(r, tput, THROUGHPUT_LE, **c0) == [0, 0] + [1] * 5 + [2] * 7
    assert sample(r, f"{tput}_count", **c0) == 2

    assert buckets(r, size, SIZE_LE, **c1) == [0, 0] + [1] * 16
    assert buckets(r, dur, DURATION_LE, **c1) == [0, 0] + [1] * 17
    assert buckets(r, tput, THROUGHPUT_LE, **c1) == [0, 0] + [1] * 12
    assert sample(r, f"{tput}_sum", **c1) == 1e9


def test_lookup_and_manager_counters_add_and_gauges_take_the_latest(
    observed: CollectorRegistry,
) -> None:
    r = observed
    assert sample(r, "kvoff_lookup_blocks_total", engine="0") == 500
    assert sample(r, "kvoff_lookup_hit_blocks_total", engine="0") == 312
    assert sample(r, "kvoff_lookup_tokens_total", engine="0") == 8000
    assert sample(r, "kvoff_lookup_hit_tokens_total", engine="0") == 4992
    assert sample(r, "kvoff_cpu_blocks_stored_total", engine="0") == 15
    assert sample(r, "kvoff_cpu_blocks_evicted_total", engine="0") == 2
    assert sample(r, "kvoff_cpu_allocation_failures_total", engine="0") == 3
    assert sample(r, "kvoff_cpu_capacity_blocks", engine="0") == 1000
    assert sample(r, "kvoff_cpu_resident_blocks", engine="0") == 15
    assert sample(r, "kvoff_cpu_pinned_blocks", engine="0") == 0

    assert sample(r, "kvoff_lookup_blocks_total", engine="1") == 8
    assert sample(r, "kvoff_lookup_hit_tokens_total", engine="1") == 128
    assert sample(r, "kvoff_cpu_blocks_stored_total", engine="1") == 0
    assert sample(r, "kvoff_cpu_capacity_blocks", engine="1") == 500
    assert sample(r, "kvoff_cpu_resident_blocks", engine="1") == 7
    assert sample(r, "kvoff_cpu_pinned_blocks", engine="1") == 1


def test_snapshot_object_and_dict_are_equivalent(reg: CollectorRegistry) -> None:
    other = CollectorRegistry()
    OffloadPromMetrics(reg).observe(SnapshotObject(interval_a()))
    OffloadPromMetrics(other).observe(interval_a())
    assert all_samples(reg) == all_samples(other)
    assert sample(reg, "kvoff_transfer_bytes_total", engine="0", direction=G2C) == 2_004_096


def test_an_engine_first_seen_by_observe_gets_all_its_series(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg)
    assert sample(reg, "kvoff_transfer_ops_total", engine="3", direction=G2C) is None
    exporter.observe(interval_c(), engine=3)  # vLLM's int engine index, labelled str(3)
    assert exporter.engines == ("0", "3")
    assert sample(reg, "kvoff_transfer_ops_total", engine="3", direction=C2G) == 1
    assert sample(reg, "kvoff_transfer_ops_total", engine="3", direction=G2C) == 0
    assert sample(reg, "kvoff_transfer_ops_total", engine="0", direction=C2G) == 0
    assert sample(reg, "kvoff_cpu_capacity_blocks", engine="3") == 500


def test_constant_labels_and_namespace(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg, labels={"model_name": "llama"}, namespace="tier2")
    exporter.observe(interval_a())
    assert sample(reg, "kvoff_transfer_ops_total", engine="0", direction=G2C) is None
    assert (
        sample(reg, "tier2_transfer_ops_total", model_name="llama", engine="0", direction=G2C) == 2
    )
    assert sample(reg, "tier2_lookup_hit_blocks_total", model_name="llama", engine="0") == 312


def test_empty_snapshot_changes_no_value(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg)
    exporter.observe(interval_a())
    before = all_samples(reg)
    # An empty interval also carries the gauges; give it the same ones.
    exporter.observe(v1_dict(capacity_blocks=1000, resident_blocks=10, pinned_blocks=3))
    assert all_samples(reg) == before


def _mutations() -> list[tuple[str, Any]]:
    """(what is wrong, a v1 dict or object with that fault)."""

    def edit(path: list[str | int], value: Any) -> dict[str, Any]:
        d = interval_a()
        target: Any = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return d

    def drop(path: list[str]) -> dict[str, Any]:
        d = interval_a()
        target: Any = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return d

    return [
        ("version 2", edit(["version"], 2)),
        ("version as str", edit(["version"], "1")),
        ("version as bool", edit(["version"], True)),
        ("no version", drop(["version"])),
        ("not a snapshot", 42),
        ("a list", [interval_a()]),
        ("no to_dict", object()),
        ("to_dict returns a list", SnapshotObject([])),  # type: ignore[arg-type]
        ("missing direction", drop(["transfers", C2G])),
        ("missing lookups", drop(["lookups"])),
        ("missing manager key", drop(["manager", "pinned_blocks"])),
        ("negative count", edit(["transfers", G2C, "bytes"], -1)),
        ("float count", edit(["lookups", "blocks_hit"], 1.0)),
        ("bool count", edit(["manager", "blocks_stored"], True)),
        ("short counts", edit(["transfers", G2C, "size_counts"], [0] * 17)),
        ("negative bucket count", edit(["transfers", C2G, "duration_counts", 3], -2)),
        ("counts not a list", edit(["transfers", C2G, "throughput_counts"], "0" * 14)),
        ("bool bucket count", edit(["transfers", G2C, "size_counts", 0], True)),
        ("float bucket count", edit(["transfers", G2C, "size_counts", 5], 1.0)),
        ("other size bounds", edit(["buckets", "size_bytes", 0], 4000)),
        ("bool bound", edit(["buckets", "duration_seconds", 14], True)),
        ("str bound", edit(["buckets", "throughput_bytes_per_second", 0], "1e8")),
        ("missing bound", edit(["buckets", "duration_seconds"], [1e-5])),
        ("bad throughput_sum", edit(["transfers", G2C, "throughput_sum"], float("nan"))),
        ("negative throughput_sum", edit(["transfers", G2C, "throughput_sum"], -1)),
        ("transfers not a dict", edit(["transfers"], [])),
    ]


@pytest.mark.parametrize(("fault", "bad"), _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_snapshot_is_rejected_and_changes_nothing(
    reg: CollectorRegistry, fault: str, bad: Any
) -> None:
    exporter = OffloadPromMetrics(reg)
    exporter.observe(interval_b())
    before = generate_latest(reg)
    with pytest.raises(InvalidArgumentError):
        exporter.observe(bad)
    assert generate_latest(reg) == before
    assert exporter.engines == ("0",)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {**v1_dict(), "version": 99},
            "invalid stats dict: version: unsupported format version 99 (this build reads 1 and 2)",
        ),
        (
            42,
            "expected a stats snapshot (an OffloadingConnectorStats, its to_dict() dict, or an "
            "object with to_dict()), got int",
        ),
        ({"version": 1}, "invalid stats dict: buckets: missing key"),
    ],
)
def test_bad_snapshot_messages_name_the_problem(
    reg: CollectorRegistry, bad: Any, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        OffloadPromMetrics(reg).observe(bad)
    assert str(info.value) == message


def test_bucket_count_error_names_the_index(reg: CollectorRegistry) -> None:
    d = interval_a()
    d["transfers"][G2C]["duration_counts"][7] = -3
    with pytest.raises(InvalidArgumentError) as info:
        OffloadPromMetrics(reg).observe(d)
    assert str(info.value) == (
        "invalid stats dict: transfers.GPU_to_CPU.duration_counts[7]: negative count -3"
    )


def test_field_errors_name_the_field(reg: CollectorRegistry) -> None:
    d = interval_a()
    d["transfers"][C2G]["size_counts"] = [0] * 17
    with pytest.raises(InvalidArgumentError) as info:
        OffloadPromMetrics(reg).observe(d)
    assert str(info.value) == (
        "invalid stats dict: transfers.CPU_to_GPU.size_counts: expected 18 bucket counts "
        "(bounds + 1 for +Inf), got 17"
    )


def test_one_schema_an_unknown_key_is_refused_everywhere(reg: CollectorRegistry) -> None:
    """The exporter, the log line and OffloadingConnectorStats apply one validator (the core's):
    a dict with a misspelt key used to be scraped by the exporter and refused by from_dict."""
    d = interval_a()
    d["lookups"]["blocks_hits"] = 1
    message = (
        'invalid stats dict: lookups: unknown key "blocks_hits" (expected ["blocks_queried", '
        '"blocks_hit", "tokens_queried", "tokens_hit"])'
    )
    exporter = OffloadPromMetrics(reg)
    before = generate_latest(reg)
    for consume in (exporter.observe, format_stats, OffloadingConnectorStats.from_dict):
        with pytest.raises(InvalidArgumentError) as info:
            consume(d)
        assert str(info.value) == message
    assert generate_latest(reg) == before


@pytest.mark.parametrize("engine", [-1, "", 1.5, True, None, b"0"])
def test_bad_engine_is_rejected_and_changes_nothing(reg: CollectorRegistry, engine: Any) -> None:
    exporter = OffloadPromMetrics(reg)
    before = generate_latest(reg)
    with pytest.raises(InvalidArgumentError, match="engine must be"):
        exporter.observe(interval_a(), engine=engine)
    assert generate_latest(reg) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": {"model-name": "x"}}, "invalid Prometheus label name 'model-name'"),
        ({"labels": {"__x": "x"}}, "invalid Prometheus label name '__x'"),
        ({"labels": {"engine": "x"}}, "label 'engine' is set by the exporter"),
        ({"labels": {"transfer_type": "x"}}, "label 'transfer_type' is set by the exporter"),
        ({"labels": {"model_name": 3}}, "label 'model_name' must have a str value"),
        ({"labels": [("a", "b")]}, "labels must be a dict"),
        ({"namespace": "kv-off"}, "invalid metric namespace 'kv-off'"),
        ({"namespace": ""}, "invalid metric namespace ''"),
        ({"engines": "01"}, "engines must be a sequence of engines"),
        ({"engines": ("0", "")}, "engine must be a non-empty str"),
        ({"engines": ("x" * 129,)}, "engine must be at most 128 characters, got 129"),
        ({"engines": ("\ud800",)}, "engine must be valid UTF-8 text, got '\\\\ud800'"),
        ({"labels": {"model_name": "m" * 1025}}, "label 'model_name' must be at most 1024 "),
        ({"labels": {"model_name": "a\udfffb"}}, "label 'model_name' must be valid UTF-8"),
        ({"max_engines": 0}, "max_engines must be an int >= 1, got 0"),
        ({"max_engines": True}, "max_engines must be an int >= 1, got True"),
        ({"max_engines": 2.0}, "max_engines must be an int >= 1, got 2.0"),
        ({"max_engines": "8"}, "max_engines must be an int >= 1, got '8'"),
        ({"engines": ("0", "1", "2"), "max_engines": 2}, "engines lists more than max_engines=2"),
        ({"engines": itertools.count(), "max_engines": 3}, "engines lists more than max_engines=3"),
    ],
)
def test_bad_constructor_arguments(
    reg: CollectorRegistry, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        OffloadPromMetrics(reg, **kwargs)
    assert list(reg.collect()) == []  # nothing was registered


def test_bounds_are_the_documented_ones(reg: CollectorRegistry) -> None:
    assert (MAX_ENGINE_LABEL_LENGTH, MAX_LABEL_VALUE_LENGTH, DEFAULT_MAX_ENGINES) == (
        128,
        1024,
        256,
    )
    exporter = OffloadPromMetrics(reg, engines=range(256))
    assert exporter.max_engines == 256
    assert len(exporter.engines) == 256
    with pytest.raises(InvalidStateError, match="engine '256' would be engine 257 of an "):
        exporter.observe(interval_c(), engine="256")


def test_an_engine_label_at_the_length_bound_is_served(reg: CollectorRegistry) -> None:
    longest = "e" * MAX_ENGINE_LABEL_LENGTH
    exporter = OffloadPromMetrics(reg, labels={"model_name": "m" * MAX_LABEL_VALUE_LENGTH})
    exporter.observe(interval_c(), engine=longest)
    labels = {"model_name": "m" * 1024, "engine": longest, "direction": C2G}
    assert sample(reg, "kvoff_transfer_ops_total", **labels) == 1


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (
            "x" * 129,
            "engine must be at most 128 characters, got 129 (starting 'xxxxxxxxxxxxxxxxxxxx')",
        ),
        ("y" * 2**20, "engine must be at most 128 characters, got 1048576 (starting 'yyyyy"),
        ("gpu\ud800", "engine must be valid UTF-8 text, got 'gpu\\ud800'"),
    ],
)
def test_an_engine_label_beyond_the_bound_is_refused_and_changes_nothing(
    reg: CollectorRegistry, engine: str, message: str
) -> None:
    exporter = OffloadPromMetrics(reg)
    exporter.observe(interval_a())
    before = generate_latest(reg)
    with pytest.raises(InvalidArgumentError) as info:
        exporter.observe(interval_c(), engine=engine)
    assert str(info.value).startswith(message)
    assert exporter.engines == ("0",)
    assert generate_latest(reg) == before


def test_a_new_engine_beyond_max_engines_is_refused_and_changes_nothing(
    reg: CollectorRegistry,
) -> None:
    exporter = OffloadPromMetrics(reg, engines=("0",), max_engines=2)
    exporter.observe(interval_c(), engine="1")
    before = generate_latest(reg)
    with pytest.raises(InvalidStateError) as info:
        exporter.observe(interval_a(), engine="2")
    assert str(info.value) == (
        "engine '2' would be engine 3 of an exporter with max_engines=2; remove_engine() one "
        "that has stopped, or build the exporter with a larger max_engines"
    )
    assert exporter.engines == ("0", "1")
    assert generate_latest(reg) == before
    # Engines that already have series keep being observed at the bound.
    exporter.observe(interval_c(), engine="1")
    assert sample(reg, "kvoff_transfer_ops_total", engine="1", direction=C2G) == 2


def test_remove_engine_drops_its_series_and_frees_its_slot(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg, vllm_compatible=True, engines=("0", "1"), max_engines=2)
    exporter.observe(interval_a(), engine="0")
    exporter.observe(interval_c(), engine="1")
    kept = {k: v for k, v in all_samples(reg).items() if ("engine", "1") not in k[1]}
    assert len(kept) < len(all_samples(reg))
    exporter.remove_engine("1")
    assert exporter.engines == ("0",)
    # Every series of engine "1" is gone from the next scrape, engine "0"'s are untouched.
    assert all_samples(reg) == kept
    assert b'engine="1"' not in generate_latest(reg)
    # Its slot is free, and it starts again from zero (a counter reset for Prometheus).
    exporter.observe(interval_c(), engine=1)
    exporter.observe(interval_c(), engine="1")
    assert exporter.engines == ("0", "1")
    assert sample(reg, "kvoff_transfer_ops_total", engine="1", direction=C2G) == 2
    assert sample(reg, "kvoff_transfer_ops_total", engine="0", direction=G2C) == 2


def test_remove_engine_takes_vllms_int_index(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg, engines=(0, 3))
    exporter.remove_engine(3)
    assert exporter.engines == ("0",)
    assert sample(reg, "kvoff_cpu_capacity_blocks", engine="3") is None


def test_remove_engine_of_an_unknown_engine_is_a_clear_error(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg, engines=("0", "1"))
    exporter.observe(interval_a(), engine="0")
    before = generate_latest(reg)
    with pytest.raises(UnknownEngineError) as info:
        exporter.remove_engine("7")
    err = info.value
    assert isinstance(err, KvoffError) and isinstance(err, KeyError)
    assert err.engine == "7"
    assert str(err) == "engine '7' has no series in this exporter"
    assert exporter.engines == ("0", "1")
    assert generate_latest(reg) == before
    exporter.remove_engine("1")
    after = generate_latest(reg)
    with pytest.raises(UnknownEngineError, match="engine '1' has no series"):
        exporter.remove_engine("1")  # twice
    with pytest.raises(InvalidArgumentError, match="engine must be a non-empty str"):
        exporter.remove_engine("")
    assert exporter.engines == ("0",)
    assert generate_latest(reg) == after


def test_observe_does_not_alias_the_callers_dict(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg)
    d = interval_a()
    exporter.observe(d)
    d["transfers"][G2C]["bytes"] = 10**12
    d["transfers"][G2C]["size_counts"][0] = 99
    assert sample(reg, "kvoff_transfer_bytes_total", engine="0", direction=G2C) == 2_004_096
    assert (
        sample(reg, "kvoff_transfer_size_bytes_bucket", engine="0", direction=G2C, le="4096.0") == 1
    )


def test_concurrent_observes_and_scrapes_add_up_exactly(reg: CollectorRegistry) -> None:
    exporter = OffloadPromMetrics(reg, engines=("0", "1"))
    snap = v1_dict([Transfer(G2C, 4096, 10_000), Transfer(C2G, 2_000_000, 1_000_000)])
    threads_per_engine, rounds = 2, 300
    inconsistent: list[str] = []
    done = threading.Event()

    def feed(engine: str) -> None:
        for _ in range(rounds):
            exporter.observe(copy.deepcopy(snap), engine=engine)

    def scrape() -> None:
        # Each scrape must see every engine's totals at one instant: ops and the size
        # histogram's count come from the same observe() calls.
        while not done.is_set():
            got = all_samples(reg)
            for engine in ("0", "1"):
                labels = frozenset({"engine": engine, "direction": G2C}.items())
                ops = got[("kvoff_transfer_ops_total", labels)]
                count = got[("kvoff_transfer_size_bytes_count", labels)]
                if ops != count:
                    inconsistent.append(f"{engine}: ops {ops} != count {count}")

    scraper = threading.Thread(target=scrape)
    feeders = [
        threading.Thread(target=feed, args=(engine,))
        for engine in ("0", "1")
        for _ in range(threads_per_engine)
    ]
    scraper.start()
    for t in feeders:
        t.start()
    for t in feeders:
        t.join()
    done.set()
    scraper.join()

    assert inconsistent == []
    n = threads_per_engine * rounds
    for engine in ("0", "1"):
        assert sample(reg, "kvoff_transfer_ops_total", engine=engine, direction=G2C) == n
        assert sample(reg, "kvoff_transfer_bytes_total", engine=engine, direction=C2G) == (
            n * 2_000_000
        )
        assert sample(reg, "kvoff_transfer_seconds_total", engine=engine, direction=C2G) == (
            n * 1_000_000 / 1e9
        )
