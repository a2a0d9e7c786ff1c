"""kvoff: a KV-cache offloading engine for LLM inference.

A second tier of KV blocks in pinned CPU memory, found by content hash, moved between GPU
and CPU at close to PCIe speed, with everything it does reported to Prometheus.
"""

from __future__ import annotations

from kvoff._core import (
    JobTracker,
    OffloadingConnectorStats,
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

__all__ = [
    "HashTypeError",
    "InvalidArgumentError",
    "InvalidStateError",
    "JobTracker",
    "KvoffError",
    "OffloadingConnectorStats",
    "StatsAccumulator",
    "UnknownHashError",
    "UnknownJobError",
    "__version__",
]
