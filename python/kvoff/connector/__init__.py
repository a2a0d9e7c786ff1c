"""The two halves an inference engine calls each step: the scheduler side (block manager
bookkeeping) and the worker side (the copies), connected by plain data.

The scheduler's names load without torch or triton; :class:`OffloadingWorker` (which needs the
copy engine, hence torch) loads on first use (PEP 562), so a scheduler process pays for neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kvoff.connector.lifecycle import RequestLifecycle
from kvoff.connector.messages import (
    LOAD,
    STORE,
    RemoteFetchSpec,
    RemoteWriteSpec,
    RequestStep,
    StepMetadata,
    TierHits,
    TransferSpec,
    WorkerOutput,
)
from kvoff.connector.scheduler import OffloadingScheduler

_LAZY = {"OffloadingWorker": "kvoff.connector.worker"}

if TYPE_CHECKING:
    from kvoff.connector.worker import OffloadingWorker


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kvoff.connector' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "LOAD",
    "STORE",
    "OffloadingScheduler",
    "OffloadingWorker",
    "RemoteFetchSpec",
    "RemoteWriteSpec",
    "RequestLifecycle",
    "RequestStep",
    "StepMetadata",
    "TierHits",
    "TransferSpec",
    "WorkerOutput",
]
