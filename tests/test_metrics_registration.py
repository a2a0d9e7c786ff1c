"""Two exporters in one registry: refused with an error naming the clashing metrics."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

from kvoff.errors import InvalidStateError, KvoffError
from kvoff.metrics import DuplicateMetricError, OffloadPromMetrics
from metrics_scenario import G2C, interval_a

KVOFF_NAMES = (
    "kvoff_cpu_allocation_failures_total",
    "kvoff_cpu_blocks_evicted_total",
    "kvoff_cpu_blocks_stored_total",
    "kvoff_cpu_capacity_blocks",
    "kvoff_cpu_pinned_blocks",
    "kvoff_cpu_resident_blocks",
    "kvoff_hit_blocks_total",
    "kvoff_hit_tokens_total",
    "kvoff_lookup_blocks_total",
    "kvoff_lookup_hit_blocks_total",
    "kvoff_lookup_hit_tokens_total",
    "kvoff_lookup_tokens_total",
    "kvoff_remote_blocks_total",
    "kvoff_remote_bytes_total",
    "kvoff_remote_duration_seconds",
    "kvoff_remote_errors_total",
    "kvoff_remote_failed_bytes_total",
    "kvoff_remote_failed_ops_total",
    "kvoff_remote_lookup_blocks_total",
    "kvoff_remote_lookup_hit_blocks_total",
    "kvoff_remote_ops_total",
    "kvoff_remote_seconds_total",
    "kvoff_remote_size_bytes",
    "kvoff_remote_throughput_bytes_per_second",
    "kvoff_remote_write_queue_blocks",
    "kvoff_remote_writes_dropped_total",
    "kvoff_transfer_blocks_total",
    "kvoff_transfer_bytes_total",
    "kvoff_transfer_duration_seconds",
    "kvoff_transfer_failed_bytes_total",
    "kvoff_transfer_failed_ops_total",
    "kvoff_transfer_ops_total",
    "kvoff_transfer_seconds_total",
    "kvoff_transfer_size_bytes",
    "kvoff_transfer_throughput_bytes_per_second",
)
VLLM_NAMES = (
    "vllm:kv_offload_allocation_failure_total",
    "vllm:kv_offload_cpu_cache_usage_perc",
    "vllm:kv_offload_load_bytes_total",
    "vllm:kv_offload_load_size",
    "vllm:kv_offload_load_time_total",
    "vllm:kv_offload_size",
    "vllm:kv_offload_store_bytes_total",
    "vllm:kv_offload_store_size",
    "vllm:kv_offload_store_time_total",
    "vllm:kv_offload_total_bytes_total",
    "vllm:kv_offload_total_time_total",
)


@pytest.mark.parametrize("auto_describe", [False, True])
def test_second_exporter_with_the_same_names_is_refused(auto_describe: bool) -> None:
    reg = CollectorRegistry(auto_describe=auto_describe)
    first = OffloadPromMetrics(reg)
    first.observe(interval_a())
    before = generate_latest(reg)

    with pytest.raises(DuplicateMetricError) as info:
        OffloadPromMetrics(reg, engines=("1",))

    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, InvalidStateError)
    assert isinstance(err, KvoffError)
    assert err.metrics == KVOFF_NAMES
    assert str(err).startswith(
        "metrics kvoff_cpu_allocation_failures_total, kvoff_cpu_blocks_evicted_total, "
    )
    assert "already registered in this registry" in str(err)
    # The registry is as it was: one exporter, no half-registered second one.
    assert generate_latest(reg) == before
    first.observe(interval_a())
    assert reg.get_sample_value("kvoff_transfer_ops_total", {"engine": "0", "direction": G2C}) == 4


def test_another_namespace_coexists() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg).observe(interval_a())
    OffloadPromMetrics(reg, namespace="kvoff_disk")
    assert reg.get_sample_value("kvoff_transfer_ops_total", {"engine": "0", "direction": G2C}) == 2
    assert (
        reg.get_sample_value("kvoff_disk_transfer_ops_total", {"engine": "0", "direction": G2C})
        == 0
    )


def test_two_vllm_compatible_exporters_clash_on_the_vllm_names_only() -> None:
    reg = CollectorRegistry()
    OffloadPromMetrics(reg, vllm_compatible=True)
    with pytest.raises(DuplicateMetricError) as info:
        OffloadPromMetrics(reg, namespace="kvoff_b", vllm_compatible=True)
    assert info.value.metrics == VLLM_NAMES
    assert str(info.value).startswith(
        "metrics vllm:kv_offload_allocation_failure_total, vllm:kv_offload_cpu_cache_usage_perc, "
        "vllm:kv_offload_load_bytes_total, vllm:kv_offload_load_size, "
    )
    # Nothing of the refused exporter was registered.
    assert (
        reg.get_sample_value("kvoff_b_transfer_ops_total", {"engine": "0", "direction": G2C})
        is None
    )


def test_clash_with_vllms_own_counter_names_that_one_metric() -> None:
    reg = CollectorRegistry()
    Counter("vllm:kv_offload_total_bytes", "vLLM's own", ["transfer_type"], registry=reg)
    with pytest.raises(
        DuplicateMetricError,
        match=r"^metric vllm:kv_offload_total_bytes_total is already registered",
    ) as info:
        OffloadPromMetrics(reg, vllm_compatible=True)
    assert info.value.metrics == ("vllm:kv_offload_total_bytes_total",)


def test_unregistered_exporter_frees_its_names() -> None:
    reg = CollectorRegistry()
    first = OffloadPromMetrics(reg)
    assert first.registry is reg
    reg.unregister(first)
    OffloadPromMetrics(reg).observe(interval_a())
    assert reg.get_sample_value("kvoff_transfer_ops_total", {"engine": "0", "direction": G2C}) == 2


def test_default_registry_is_the_global_one() -> None:
    exporter = OffloadPromMetrics(namespace="kvoff_test_global")
    try:
        assert exporter.registry is REGISTRY
        assert (
            REGISTRY.get_sample_value(
                "kvoff_test_global_transfer_ops_total", {"engine": "0", "direction": G2C}
            )
            == 0
        )
    finally:
        REGISTRY.unregister(exporter)


class _OldClientRegistry(CollectorRegistry):
    """Raises what prometheus_client raised on a clash before DuplicateTimeseries existed:
    a plain ValueError naming the duplicated series in its message."""

    def register(self, collector: object) -> None:
        raise ValueError(
            "Duplicated timeseries in CollectorRegistry: "
            "{'kvoff_transfer_bytes_total', 'kvoff_transfer_bytes'}"
        )


class _FailingRegistry(CollectorRegistry):
    def register(self, collector: object) -> None:
        raise ValueError("something else")


def test_clash_reported_by_an_older_prometheus_client_is_named() -> None:
    with pytest.raises(DuplicateMetricError) as info:
        OffloadPromMetrics(_OldClientRegistry())
    assert info.value.metrics == ("kvoff_transfer_bytes_total",)


def test_other_registration_errors_pass_through_unchanged() -> None:
    with pytest.raises(ValueError, match=r"^something else$") as info:
        OffloadPromMetrics(_FailingRegistry())
    assert not isinstance(info.value, DuplicateMetricError)
