"""The ``vllm:kv_offload_*`` series that vLLM's offloading connector exposes, rebuilt from kvoff
totals so that existing dashboards keep working.

Names, bucket bounds, labels and units are vLLM's (facts from vLLM 0.33.0's
``kv_connector/v1/offloading/metrics.py`` and ``v1/kv_offload/cpu/common.py``; no code). Two
generations, both exposed, because 0.33.0 itself still exposes both for its CPU spec:

- **0.33.0's flat names** (one series per engine, no ``transfer_type``):
  ``vllm:kv_offload_load_bytes`` / ``…_store_bytes`` (bytes moved), ``…_load_time`` /
  ``…_store_time`` (seconds), ``…_load_size`` / ``…_store_size`` (histogram of bytes per
  transfer), ``vllm:kv_offload_allocation_failure`` (store allocations refused) and
  ``vllm:kv_offload_cpu_cache_usage_perc`` (share of the CPU tier pinned by loads or stores
  in flight).
- **the deprecated names** of earlier releases, with a ``transfer_type`` label ("GPU_to_CPU" /
  "CPU_to_GPU"): ``vllm:kv_offload_total_bytes``, ``vllm:kv_offload_total_time``,
  ``vllm:kv_offload_size``.

vLLM declares its counters through prometheus_client's ``Counter``, which appends ``_total``
to a counter name that lacks it; the families built here expose the same sample names
(``vllm:kv_offload_load_bytes_total``, ``vllm:kv_offload_total_bytes_total``, …).
``model_name`` comes from the exporter's constant labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from kvoff._core import Direction, OffloadingConnectorStats
from kvoff.metrics.snapshot import SIZE_BUCKETS_BYTES

__all__ = ["VLLM_SIZE_BUCKETS_BYTES", "le_label", "merge_size_counts", "vllm_families"]

# Bucket bounds as prometheus_client's own Histogram writes them ("1e+06", "4096.0"), so that
# le values match what vLLM exposes (the function is untyped upstream).
le_label = cast(Callable[[float], str], floatToGoString)

VLLM_SIZE_BUCKETS_BYTES: tuple[float, ...] = (
    1e6, 5e6, 1e7, 2e7, 4e7, 6e7, 8e7, 1e8, 1.5e8, 2e8,
)  # fmt: skip

# Index of each vLLM bound among kvoff's size bounds. kvoff's bounds are a superset, so every
# vLLM bucket is an exact sum of kvoff buckets; fail at import if the layouts ever drift apart.
_VLLM_BOUND_INDEX: tuple[int, ...] = tuple(
    SIZE_BUCKETS_BYTES.index(bound) for bound in VLLM_SIZE_BUCKETS_BYTES
)
# vLLM's transfer_type values: the GPU link's two directions.
_DIRECTIONS = Direction.GPU
_VLLM_LE: tuple[str, ...] = (*(le_label(b) for b in VLLM_SIZE_BUCKETS_BYTES), "+Inf")
# 0.33.0's flat names say the direction in the name: a load is CPU to GPU, a store GPU to CPU.
_FLAT_VERB = {"CPU_to_GPU": "load", "GPU_to_CPU": "store"}
_FLAT_HELP = {
    "load": ("loaded from offload storage to GPU", "load"),
    "store": ("stored from GPU to offload storage", "store"),
}


def merge_size_counts(counts: Sequence[int]) -> list[int]:
    """Cumulative counts at each vLLM bound, then +Inf, from kvoff's non-cumulative size
    counts (one per kvoff bound plus +Inf)."""
    merged = [sum(counts[: i + 1]) for i in _VLLM_BOUND_INDEX]
    merged.append(sum(counts))
    return merged


def _size_buckets(t: Any) -> list[tuple[str, float]]:
    return list(zip(_VLLM_LE, merge_size_counts(t.size_counts), strict=True))


def _flat_families(
    snaps: Mapping[str, OffloadingConnectorStats], const_labels: Mapping[str, str]
) -> list[Metric]:
    """vLLM 0.33.0's names: per engine, the direction in the name."""
    names = [*const_labels, "engine"]
    consts = list(const_labels.values())
    families: list[Metric] = []
    for direction in ("CPU_to_GPU", "GPU_to_CPU"):
        verb = _FLAT_VERB[direction]
        what, op = _FLAT_HELP[verb]
        moved = CounterMetricFamily(
            f"vllm:kv_offload_{verb}_bytes", f"Total bytes {what} (vLLM-compatible).", labels=names
        )
        seconds = CounterMetricFamily(
            f"vllm:kv_offload_{verb}_time",
            f"Total {op} time, in seconds (vLLM-compatible).",
            labels=names,
        )
        size = HistogramMetricFamily(
            f"vllm:kv_offload_{verb}_size",
            f"Histogram of KV offload {op} operation size, in bytes (vLLM-compatible).",
            labels=names,
        )
        for engine, snap in snaps.items():
            t = snap.direction(direction)
            values = [*consts, engine]
            moved.add_metric(values, t.bytes)
            seconds.add_metric(values, t.time_ns / 1e9)
            size.add_metric(values, _size_buckets(t), sum_value=t.bytes)
        families += [moved, seconds, size]

    failures = CounterMetricFamily(
        "vllm:kv_offload_allocation_failure",
        "Number of KV offload store allocation attempts that failed (vLLM-compatible).",
        labels=names,
    )
    usage = GaugeMetricFamily(
        "vllm:kv_offload_cpu_cache_usage_perc",
        "Share of the CPU tier pinned by loads or stores in flight (vLLM-compatible).",
        labels=names,
    )
    for engine, snap in snaps.items():
        m = snap.to_dict()["manager"]
        failures.add_metric([*consts, engine], m["allocation_failures"])
        capacity = m["capacity_blocks"]
        usage.add_metric([*consts, engine], m["pinned_blocks"] / capacity if capacity else 0.0)
    return [*families, failures, usage]


def _deprecated_families(
    snaps: Mapping[str, OffloadingConnectorStats], const_labels: Mapping[str, str]
) -> list[Metric]:
    """The names before 0.33's flat ones, with a ``transfer_type`` label."""
    names = [*const_labels, "engine", "transfer_type"]
    total_bytes = CounterMetricFamily(
        "vllm:kv_offload_total_bytes",
        "Bytes moved by KV offload transfers (vLLM-compatible, deprecated by vLLM).",
        labels=names,
    )
    total_time = CounterMetricFamily(
        "vllm:kv_offload_total_time",
        "Seconds spent in KV offload transfers (vLLM-compatible, deprecated by vLLM).",
        labels=names,
    )
    size = HistogramMetricFamily(
        "vllm:kv_offload_size",
        "Size of KV offload transfers in bytes (vLLM-compatible, deprecated by vLLM).",
        labels=names,
    )
    for engine, snap in snaps.items():
        for direction in _DIRECTIONS:
            t = snap.direction(direction)
            values = [*const_labels.values(), engine, direction]
            total_bytes.add_metric(values, t.bytes)
            total_time.add_metric(values, t.time_ns / 1e9)
            size.add_metric(values, _size_buckets(t), sum_value=t.bytes)
    return [total_bytes, total_time, size]


def vllm_families(
    totals: Mapping[str, OffloadingConnectorStats], const_labels: Mapping[str, str]
) -> list[Metric]:
    """Every vLLM-compatible family (0.33.0's flat names, then the deprecated ones); no series
    when ``totals`` is empty (what ``describe()`` needs)."""
    return [*_flat_families(totals, const_labels), *_deprecated_families(totals, const_labels)]
