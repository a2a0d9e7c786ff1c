"""Prometheus metrics and a log line for kvoff's offload statistics.

Rust records into atomics; this package turns the resulting snapshots into metric families at
scrape time (:class:`OffloadPromMetrics`), serves them (:func:`start_metrics_server`), and
summarises one snapshot in a log line (:func:`format_stats`). docs/METRICS.md lists every
metric.
"""

from __future__ import annotations

from kvoff.metrics.errors import (
    AddressUnavailableError,
    DuplicateMetricError,
    MetricsServerError,
    PortInUseError,
    UnknownEngineError,
)
from kvoff.metrics.exporter import OffloadPromMetrics
from kvoff.metrics.log_line import format_stats
from kvoff.metrics.server import MetricsServer, start_metrics_server

__all__ = [
    "AddressUnavailableError",
    "DuplicateMetricError",
    "MetricsServer",
    "MetricsServerError",
    "OffloadPromMetrics",
    "PortInUseError",
    "UnknownEngineError",
    "format_stats",
    "start_metrics_server",
]
