"""Plain data that crosses between the scheduler and worker halves (picklable, no handles)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from kvoff._core import Direction

BlockHash = bytes | int

STORE: Final = Direction.GPU_TO_CPU
LOAD: Final = Direction.CPU_TO_GPU


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
class RemoteFetchSpec:
    """Fetch blocks from the remote tier into CPU blocks the scheduler allocated for them
    (``prepare_store``: not loadable until every rank reported them fetched and verified).
    ``block_hashes[i]`` goes into ``cpu_block_ids[i]``; ``transfer_id`` is the scheduler's
    name for the fetch, from the same counter as :class:`TransferSpec` ids."""

    transfer_id: int
    req_id: str
    block_hashes: list[BlockHash]
    cpu_block_ids: np.ndarray


@dataclass(frozen=True)
class RemoteWriteSpec:
    """Write stored (ready) CPU blocks to the remote tier, in the background. The scheduler
    keeps them pinned until every rank lists their hashes in ``WorkerOutput.remote_released``."""

    block_hashes: list[BlockHash]
    cpu_block_ids: np.ndarray


@dataclass(frozen=True)
class StepMetadata:
    """The scheduler's orders for one step: loads start before compute, stores after it;
    remote fetches and writes go to background threads (never waited for by the step)."""

    loads: list[TransferSpec] = field(default_factory=list)
    stores: list[TransferSpec] = field(default_factory=list)
    remote_fetches: list[RemoteFetchSpec] = field(default_factory=list)
    remote_writes: list[RemoteWriteSpec] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerOutput:
    """What one worker (one tensor-parallel rank) reports back after a step.

    ``transfers``: ``(transfer_id, success)`` for every transfer that completed on this rank
    since its last output, each exactly once: the scheduler's only input
    (:meth:`~kvoff.connector.OffloadingScheduler.update_from_output` reads nothing else);
    ``rank``: the worker's rank, ``0 .. num_workers - 1``; ``remote_fetches`` and
    ``remote_released``: the remote tier's results on this rank (below).

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
    #: ``(transfer_id, per-block ok)`` of each :class:`RemoteFetchSpec` finished on this rank:
    #: ``ok[i]`` is true only if block ``i``'s value was found, verified and copied in.
    remote_fetches: list[tuple[int, tuple[bool, ...]]] = field(default_factory=list)
    #: Hashes of :class:`RemoteWriteSpec` blocks this rank no longer reads (written, already
    #: on the server, dropped or failed): the scheduler unpins them once every rank did.
    remote_released: list[BlockHash] = field(default_factory=list)
    #: CPU blocks ``[0, n)`` of this rank's tier that are allocated (pinned) and usable, as of
    #: this output (``CpuGpuTransfer.ready_cpu_blocks``; it only grows). The scheduler lets its
    #: manager hand out ids below the minimum over the ranks. None: not reported (the
    #: scheduler's limit stays as it is).
    ready_cpu_blocks: int | None = None


@dataclass(frozen=True)
class TierHits:
    """Blocks and tokens served to requests (loaded onto the GPU), by the tier they came
    from. A block fetched from the remote tier for a request is a remote hit for that request;
    a later request finding it in the CPU tier counts a CPU hit."""

    blocks_hit_cpu: int = 0
    blocks_hit_remote: int = 0
    tokens_hit_cpu: int = 0
    tokens_hit_remote: int = 0
