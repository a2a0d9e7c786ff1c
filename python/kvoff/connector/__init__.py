"""The two halves an inference engine calls each step: the scheduler side (block manager
bookkeeping) and the worker side (the copies), connected by plain data.

The scheduler's names load without torch or triton; :class:`OffloadingWorker` (which needs the
copy engine, hence torch) loads on first use (PEP 562), so a scheduler process pays for neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvoff._lazy import lazy_names
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


__getattr__, __dir__ = lazy_names("kvoff.connector", globals(), _LAZY)


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
