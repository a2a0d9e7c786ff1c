"""kvoff: a KV-cache offloading engine for LLM inference.

A second tier of KV blocks in pinned CPU memory, found by content hash, moved between GPU
and CPU at close to PCIe speed, with everything it does reported to Prometheus.
"""

from __future__ import annotations

from kvoff._core import (
    JobTracker,
    LoadStoreSpec,
    OffloadingConnectorStats,
    OffloadingEvent,
    OffloadingManager,
    PrepareStoreOutput,
    StatsAccumulator,
    __version__,
)
from kvoff.errors import (
    HashTypeError,
    InvalidArgumentError,
    InvalidStateError,
    KvoffError,
    UnknownHashError,
    UnknownJobError,
)
from kvoff.metrics import (
    DuplicateMetricError,
    MetricsServer,
    OffloadPromMetrics,
    PortInUseError,
    format_stats,
    start_metrics_server,
)
from kvoff.transfer import CpuGpuTransfer, TransferResult

__all__ = [
    "CpuGpuTransfer",
    "DuplicateMetricError",
    "HashTypeError",
    "InvalidArgumentError",
    "InvalidStateError",
    "JobTracker",
    "KvoffError",
    "LoadStoreSpec",
    "MetricsServer",
    "OffloadPromMetrics",
    "OffloadingConnectorStats",
    "OffloadingEvent",
    "OffloadingManager",
    "PortInUseError",
    "PrepareStoreOutput",
    "StatsAccumulator",
    "TransferResult",
    "UnknownHashError",
    "UnknownJobError",
    "__version__",
    "format_stats",
    "start_metrics_server",
]
