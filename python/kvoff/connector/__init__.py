"""The two halves an inference engine calls each step: the scheduler side (block manager
bookkeeping) and the worker side (the copies), connected by plain data."""

from kvoff.connector.messages import (
    LOAD,
    STORE,
    RequestStep,
    StepMetadata,
    TransferSpec,
    WorkerOutput,
)
from kvoff.connector.scheduler import OffloadingScheduler
from kvoff.connector.worker import OffloadingWorker

__all__ = [
    "LOAD",
    "STORE",
    "OffloadingScheduler",
    "OffloadingWorker",
    "RequestStep",
    "StepMetadata",
    "TransferSpec",
    "WorkerOutput",
]
