"""vllm_compatible=True: the vllm:kv_offload_* series that vLLM dashboards query."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from kvoff.metrics import OffloadPromMetrics
from metrics_scenario import C2G, G2C, interval_a, interval_b, interval_c
from stats_dicts import Transfer, v1_dict

VLLM_BOUNDS = [1e6, 5e6, 1e7, 2e7, 4e7, 6e7, 8e7, 1e8, 1.5e8, 2e8]
VLLM_LE = [
    "1e+06", "5e+06", "1e+07", "2e+07", "4e+07", "6e+07", "8e+07", "1e+08", "1.5e+08", "2e+08",
    "+Inf",
]  # fmt: skip


def vllm_buckets(reg: CollectorRegistry, **labels: str) -> list[float | None]:
    return [
        reg.get_sample_value("vllm:kv_offload_size_bucket", {**labels, "le": le}) for le in VLLM_LE
    ]


@pytest.fixture
def reg() -> CollectorRegistry:
    reg = CollectorRegistry()
    exporter = OffloadPromMetrics(
        reg, labels={"model_name": "m"}, vllm_compatible=True, engines=(0, 1)
    )
    exporter.observe(interval_a(), engine=0)
    exporter.observe(interval_b(), engine=0)
    exporter.observe(interval_c(), engine=1)
    return reg


def test_not_exposed_by_default() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg).observe(interval_a())
    assert b"vllm:" not in generate_latest(reg)


def test_counters_use_the_sample_names_dashboards_query(reg: CollectorRegistry) -> None:
    text = generate_latest(reg).decode()
    assert "# TYPE vllm:kv_offload_total_bytes_total counter" in text
    assert "# TYPE vllm:kv_offload_total_time_total counter" in text
    assert "# TYPE vllm:kv_offload_size histogram" in text
    assert (
        'vllm:kv_offload_total_bytes_total{engine="0",model_name="m",transfer_type="GPU_to_CPU"}'
        " 5.302004096e+09" in text
    )


def test_counters_are_exact(reg: CollectorRegistry) -> None:
    def value(name: str, engine: str, tt: str) -> float | None:
        return reg.get_sample_value(
            name, {"model_name": "m", "engine": engine, "transfer_type": tt}
        )

    assert value("vllm:kv_offload_total_bytes_total", "0", G2C) == 5_302_004_096
    assert value("vllm:kv_offload_total_bytes_total", "0", C2G) == 150_262_144
    assert value("vllm:kv_offload_total_bytes_total", "1", G2C) == 0
    assert value("vllm:kv_offload_total_bytes_total", "1", C2G) == 65_536
    assert value("vllm:kv_offload_total_time_total", "0", G2C) == 20.01101
    assert value("vllm:kv_offload_total_time_total", "0", C2G) == 0.005262144
    assert value("vllm:kv_offload_total_time_total", "1", G2C) == 0
    assert value("vllm:kv_offload_total_time_total", "1", C2G) == 6.5536e-05


def test_size_histogram_is_an_exact_merge_of_the_finer_buckets(reg: CollectorRegistry) -> None:
    g0 = {"model_name": "m", "engine": "0", "transfer_type": G2C}
    c0 = {"model_name": "m", "engine": "0", "transfer_type": C2G}
    g1 = {"model_name": "m", "engine": "1", "transfer_type": G2C}
    c1 = {"model_name": "m", "engine": "1", "transfer_type": C2G}
    # 4096 and 2e6 under 5e6; 3e8 and 5e9 only in +Inf.
    assert vllm_buckets(reg, **g0) == [1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 4]
    assert reg.get_sample_value("vllm:kv_offload_size_count", g0) == 4
    assert reg.get_sample_value("vllm:kv_offload_size_sum", g0) == 5_302_004_096
    # 262144 under 1e6, 1.5e8 exactly on a bound.
    assert vllm_buckets(reg, **c0) == [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2]
    assert reg.get_sample_value("vllm:kv_offload_size_sum", c0) == 150_262_144
    assert vllm_buckets(reg, **g1) == [0] * 11
    assert vllm_buckets(reg, **c1) == [1] * 11


def test_present_at_zero_before_any_observe() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg, vllm_compatible=True, engines=("0", "1"))
    for engine in ("0", "1"):
        for tt in (G2C, C2G):
            labels = {"engine": engine, "transfer_type": tt}
            assert reg.get_sample_value("vllm:kv_offload_total_bytes_total", labels) == 0
            assert reg.get_sample_value("vllm:kv_offload_total_time_total", labels) == 0
            assert vllm_buckets(reg, **labels) == [0] * 11
            assert reg.get_sample_value("vllm:kv_offload_size_sum", labels) == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([4096, 262_144, *map(int, VLLM_BOUNDS), 4_000_000_000]),
            st.integers(min_value=1, max_value=6_000_000_000),
        ),
        max_size=40,
    )
)
def test_merge_matches_direct_bucketing_with_vllm_bounds(sizes: list[int]) -> None:
    reg = CollectorRegistry()
    exporter = OffloadPromMetrics(reg, vllm_compatible=True)
    exporter.observe(v1_dict([Transfer(C2G, n, 1_000_000) for n in sizes]))
    expected = [sum(1 for n in sizes if n <= b) for b in VLLM_BOUNDS] + [len(sizes)]
    assert vllm_buckets(reg, engine="0", transfer_type=C2G) == expected
    assert reg.get_sample_value(
        "vllm:kv_offload_size_sum", {"engine": "0", "transfer_type": C2G}
    ) == sum(sizes)


def test_flat_033_names_are_exact_and_equal_the_deprecated_series(
    reg: CollectorRegistry,
) -> None:
    # vLLM 0.33.0's names: the direction in the name, one series per engine.
    def flat(name: str, engine: str) -> float | None:
        return reg.get_sample_value(name, {"model_name": "m", "engine": engine})

    assert flat("vllm:kv_offload_store_bytes_total", "0") == 5_302_004_096
    assert flat("vllm:kv_offload_load_bytes_total", "0") == 150_262_144
    assert flat("vllm:kv_offload_store_bytes_total", "1") == 0
    assert flat("vllm:kv_offload_load_bytes_total", "1") == 65_536
    assert flat("vllm:kv_offload_store_time_total", "0") == 20.01101
    assert flat("vllm:kv_offload_load_time_total", "1") == 6.5536e-05
    assert flat("vllm:kv_offload_store_size_count", "0") == 4
    assert flat("vllm:kv_offload_load_size_sum", "0") == 150_262_144
    for engine in ("0", "1"):
        for verb, tt in (("store", G2C), ("load", C2G)):
            old = {"model_name": "m", "engine": engine, "transfer_type": tt}
            new = {"model_name": "m", "engine": engine}
            assert [
                reg.get_sample_value(f"vllm:kv_offload_{verb}_size_bucket", {**new, "le": le})
                for le in VLLM_LE
            ] == vllm_buckets(reg, **old)
            for new_name, old_name in (
                (f"vllm:kv_offload_{verb}_bytes_total", "vllm:kv_offload_total_bytes_total"),
                (f"vllm:kv_offload_{verb}_time_total", "vllm:kv_offload_total_time_total"),
            ):
                assert reg.get_sample_value(new_name, new) == reg.get_sample_value(old_name, old)


def test_allocation_failures_and_cpu_usage_follow_the_manager(reg: CollectorRegistry) -> None:
    def flat(name: str, engine: str) -> float | None:
        return reg.get_sample_value(name, {"model_name": "m", "engine": engine})

    assert flat("vllm:kv_offload_allocation_failure_total", "0") == 3  # 1 + 2
    assert flat("vllm:kv_offload_allocation_failure_total", "1") == 0
    # The latest interval's pinned share: 0 of 1000 on engine 0, 1 of 500 on engine 1.
    assert flat("vllm:kv_offload_cpu_cache_usage_perc", "0") == 0.0
    assert flat("vllm:kv_offload_cpu_cache_usage_perc", "1") == 1 / 500


def test_flat_names_present_at_zero_and_usage_zero_without_capacity() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg, vllm_compatible=True, engines=("0",))
    for name in (
        "vllm:kv_offload_load_bytes_total",
        "vllm:kv_offload_store_time_total",
        "vllm:kv_offload_load_size_count",
        "vllm:kv_offload_allocation_failure_total",
        "vllm:kv_offload_cpu_cache_usage_perc",
    ):
        assert reg.get_sample_value(name, {"engine": "0"}) == 0, name
