"""kvoff: a KV-cache offloading engine for LLM inference.

A second tier of KV blocks in pinned CPU memory, found by content hash, moved between GPU
and CPU at close to PCIe speed, with everything it does reported to Prometheus.
"""

from __future__ import annotations

from kvoff._core import (
    LoadStoreSpec,
    OffloadingEvent,
    OffloadingManager,
    PrepareStoreOutput,
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
    "KvoffError",
    "LoadStoreSpec",
    "OffloadingEvent",
    "OffloadingManager",
    "PrepareStoreOutput",
    "UnknownHashError",
    "UnknownJobError",
    "__version__",
]
