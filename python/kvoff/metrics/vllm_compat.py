"""The ``vllm:kv_offload_*`` series that vLLM's offloading connector exposes, rebuilt from kvoff
totals so that existing dashboards keep working.

Facts taken from vLLM's ``kv_connector/v1/offloading/metrics.py`` (names, buckets, labels and
units; no code): two counters, ``vllm:kv_offload_total_bytes`` (bytes moved) and
``vllm:kv_offload_total_time`` (seconds spent in transfers), and the histogram
``vllm:kv_offload_size`` (bytes per transfer), each labelled by vLLM's ``model_name`` and
``engine`` plus ``transfer_type`` ("GPU_to_CPU" / "CPU_to_GPU"). vLLM declares them through
prometheus_client's ``Counter``, which appends ``_total`` to a counter name that lacks it, so
the samples dashboards query are ``vllm:kv_offload_total_bytes_total`` and
``vllm:kv_offload_total_time_total``; the families built here expose the same sample names.
``model_name`` comes from the exporter's constant labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
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


def merge_size_counts(counts: Sequence[int]) -> list[int]:
    """Cumulative counts at each vLLM bound, then +Inf, from kvoff's non-cumulative size
    counts (one per kvoff bound plus +Inf)."""
    merged = [sum(counts[: i + 1]) for i in _VLLM_BOUND_INDEX]
    merged.append(sum(counts))
    return merged


def vllm_families(
    totals: Mapping[str, OffloadingConnectorStats], const_labels: Mapping[str, str]
) -> list[Metric]:
    """The three vLLM families, one series per (engine, transfer type); no series when
    ``totals`` is empty (what ``describe()`` needs)."""
    names = [*const_labels, "engine", "transfer_type"]
    total_bytes = CounterMetricFamily(
        "vllm:kv_offload_total_bytes",
        "Bytes moved by KV offload transfers (vLLM-compatible).",
        labels=names,
    )
    total_time = CounterMetricFamily(
        "vllm:kv_offload_total_time",
        "Seconds spent in KV offload transfers (vLLM-compatible).",
        labels=names,
    )
    size = HistogramMetricFamily(
        "vllm:kv_offload_size",
        "Size of KV offload transfers in bytes (vLLM-compatible buckets).",
        labels=names,
    )
    for engine, snap in totals.items():
        for direction in _DIRECTIONS:
            t = snap.direction(direction)
            values = [*const_labels.values(), engine, direction]
            total_bytes.add_metric(values, t.bytes)
            total_time.add_metric(values, t.time_ns / 1e9)
            cumulative = merge_size_counts(t.size_counts)
            size.add_metric(values, list(zip(_VLLM_LE, cumulative, strict=True)), sum_value=t.bytes)
    return [total_bytes, total_time, size]
