"""Plain data that crosses between the scheduler and worker halves (picklable, no handles)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

BlockHash = bytes | int

STORE: Final = "GPU_to_CPU"
LOAD: Final = "CPU_to_GPU"


@dataclass(frozen=True)
class RequestStep:
    """What the scheduler knows of one request scheduled in this step.

    ``gpu_block_hashes`` are the hashes of the request's full GPU blocks so far,
    ``gpu_block_ids`` its allocated GPU block ids (same order), and ``num_tokens_after_step``
    the tokens whose KV will exist once this step's compute is done.
    """

    req_id: str
    gpu_block_hashes: Sequence[BlockHash]
    gpu_block_ids: Sequence[int] | np.ndarray
    num_tokens_after_step: int


@dataclass(frozen=True)
class TransferSpec:
    """One transfer for the worker: ``transfer_id`` is the scheduler's name for it."""

    transfer_id: int
    req_id: str
    direction: str
    gpu_block_ids: np.ndarray
    cpu_block_ids: np.ndarray


@dataclass(frozen=True)
class StepMetadata:
    """The scheduler's orders for one step: loads start before compute, stores after it."""

    loads: list[TransferSpec] = field(default_factory=list)
    stores: list[TransferSpec] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerOutput:
    """What one worker (one tensor-parallel rank) reports back after a step.

    ``transfers``: ``(transfer_id, success)`` for every transfer that completed on this rank
    since its last output, each exactly once: the scheduler's only input
    (:meth:`~kvoff.connector.OffloadingScheduler.update_from_output` reads nothing else);
    ``rank``: the worker's rank, ``0 .. num_workers - 1``.

    ``finished_storing`` / ``finished_loading`` are this rank's share of the request lifecycle,
    in the form of vLLM's worker ``get_finished() -> (finished_sending, finished_recving)``
    (vLLM combines the ranks' reports itself): finished requests with nothing in flight on this
    rank, and requests whose loads all completed on this rank. They follow the scheduler's rule
    (:mod:`kvoff.connector.lifecycle`) on this rank's transfers; the engine-wide answer, what
    holds on every rank, is the scheduler's
    :meth:`~kvoff.connector.OffloadingScheduler.take_freeable` and
    :meth:`~kvoff.connector.OffloadingScheduler.take_finished_loading`.
    """

    transfers: list[tuple[int, bool]] = field(default_factory=list)
    finished_storing: list[str] = field(default_factory=list)
    finished_loading: list[str] = field(default_factory=list)
    rank: int = 0
