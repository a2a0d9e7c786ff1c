"""kvoff: a KV-cache offloading engine for LLM inference.

A second tier of KV blocks in pinned CPU memory, found by content hash, moved between GPU
and CPU at close to PCIe speed, with everything it does reported to Prometheus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvoff._core import (
    Direction,
    DirectionStats,
    JobTracker,
    LoadStoreSpec,
    OffloadingConnectorStats,
    OffloadingEvent,
    OffloadingManager,
    PrepareStoreOutput,
    StatsAccumulator,
    VllmOffloadingManager,
    VllmRequestState,
    __version__,
)
from kvoff._lazy import lazy_names
from kvoff.errors import (
    HashTypeError,
    InvalidArgumentError,
    InvalidStateError,
    KvoffError,
    UnknownHashError,
    UnknownJobError,
)

# The worker half (torch, triton) and the exporter (prometheus-client) load on first use, so a
# scheduler process that imports kvoff for the manager pays for neither (PEP 562).
_LAZY = {
    "CpuGpuTransfer": "kvoff.transfer",
    "TransferResult": "kvoff.transfer",
    "DuplicateMetricError": "kvoff.metrics",
    "MetricsServer": "kvoff.metrics",
    "OffloadPromMetrics": "kvoff.metrics",
    "PortInUseError": "kvoff.metrics",
    "format_stats": "kvoff.metrics",
    "start_metrics_server": "kvoff.metrics",
}

if TYPE_CHECKING:
    from kvoff.metrics import (
        DuplicateMetricError,
        MetricsServer,
        OffloadPromMetrics,
        PortInUseError,
        format_stats,
        start_metrics_server,
    )
    from kvoff.transfer import CpuGpuTransfer, TransferResult


__getattr__, __dir__ = lazy_names("kvoff", globals(), _LAZY)


__all__ = [
    "CpuGpuTransfer",
    "Direction",
    "DirectionStats",
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
    "VllmOffloadingManager",
    "VllmRequestState",
    "__version__",
    "format_stats",
    "start_metrics_server",
]
