"""The scheduler half: which tokens the CPU tier can supply, which loads and stores to issue.

It runs in the engine's scheduler process next to the block manager, and talks to the worker
half only through plain data (:class:`StepMetadata` one way, :class:`WorkerOutput` back), so the
two can live in different processes.

Naming: one CPU block covers ``ratio = cpu_block_size // gpu_block_size`` GPU blocks and is
named by the hash of the *last* GPU block inside it (the hash of a prefix-chained block names
the whole prefix up to it). A partial CPU block is never looked up or stored.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kvoff._core import OffloadingEvent, OffloadingManager, StatsAccumulator
from kvoff.connector.growth import UsableLimit
from kvoff.connector.lifecycle import RequestLifecycle
from kvoff.connector.messages import (
    LOAD,
    STORE,
    RequestStep,
    StepMetadata,
    TierHits,
    TransferSpec,
    WorkerOutput,
)
from kvoff.connector.remote_path import RemotePath
from kvoff.errors import InvalidArgumentError, InvalidStateError

if TYPE_CHECKING:
    from kvoff.remote import RemoteTier

BlockHash = bytes | int


@dataclass
class _Transfer:
    req_id: str
    direction: str
    cpu_hashes: list[BlockHash]
    gpu_block_ids: np.ndarray
    # rank -> success, for every rank that has reported this transfer (or was failed).
    outcomes: dict[int, bool] = field(default_factory=dict)


@dataclass
class _Request:
    # Index of the next CPU block of this request that has not been offered to prepare_store.
    next_store_block: int = 0


class OffloadingScheduler:
    """Scheduler-side bookkeeping over an :class:`~kvoff.OffloadingManager`.

    Call order per engine step (the same as vLLM's connector scheduler hooks):

    1. :meth:`get_num_new_matched_tokens` for each waiting request, then
       :meth:`update_state_after_alloc` once its GPU blocks are allocated;
    2. :meth:`build_step` with the requests scheduled this step, which returns the loads (to
       start before the step's compute) and stores (to submit after it);
    3. :meth:`update_from_output` with each worker's :class:`WorkerOutput`;
    4. :meth:`request_finished` when a request ends: ``True`` means its GPU blocks must stay
       allocated until :meth:`take_freeable` lists it (its transfers done on every rank).

    The scheduler owns the request lifecycle (:meth:`take_freeable`,
    :meth:`take_finished_loading`): it sees every rank's reports. A worker's
    ``WorkerOutput.finished_*`` are the same rule applied to one rank, for vLLM's API.

    ``num_workers`` is the number of worker processes (tensor-parallel ranks ``0 ..
    num_workers - 1``) that each run every transfer on their shard of the KV heads. Each reports
    a transfer once, in a :class:`WorkerOutput` carrying its rank: the transfer is complete when
    every rank has reported it, and succeeded only if every rank succeeded, so a block becomes
    loadable only once every rank holds its shard. A rank that never reports keeps the
    transfer in flight (:meth:`pending_reports` names it); :meth:`fail_rank` declares it dead.

    ``remote`` (a :meth:`RemoteTier.for_scheduler <kvoff.remote.RemoteTier.for_scheduler>`)
    puts a shared remote tier behind the CPU tier: on a CPU-tier miss the request is answered
    ``None`` while the remote tier is asked (in the background) for the following blocks, and
    again while its hits are fetched into CPU blocks by the workers; then they load from the
    CPU tier as usual. ``remote_max_wait_steps`` bounds the steps a request waits for a lookup
    answer (then it goes on with the CPU hits); ``remote_max_write_pins`` the CPU blocks held
    for writes to the remote tier at once (default: half the CPU tier). Blocks stored to the
    CPU tier are written to the remote tier behind the step (write-behind). The workers need
    the same remote tier (:meth:`RemoteTier.for_worker <kvoff.remote.RemoteTier.for_worker>`).

    A CPU tier still being allocated (each worker's ``CpuGpuTransfer(alloc_in_background=True)``)
    grows: build the manager with ``usable_blocks=0`` and every :class:`WorkerOutput` raises its
    usable limit to the minimum ``ready_cpu_blocks`` over the ranks (:mod:`.growth`), so no
    CPU block a rank has not pinned yet is ever handed out; :attr:`usable_cpu_blocks` and the
    ``capacity_blocks`` gauge show the growth.

    ``stats`` (the :class:`~kvoff.StatsAccumulator` the manager reports into, as a worker's
    ``JobTracker(stats=...)``) gets one ``record_hits`` per hit the scheduler queues for loading,
    split by tier as :meth:`tier_hits` counts it, and, with ``remote``, the scheduler tier's
    lookups and errors (``RemoteStats.attach``).
    """

    def __init__(
        self,
        manager: OffloadingManager,
        gpu_block_size: int,
        cpu_block_size: int,
        *,
        num_workers: int = 1,
        remote: RemoteTier | None = None,
        remote_max_wait_steps: int = 4,
        remote_max_write_pins: int | None = None,
        stats: StatsAccumulator | None = None,
    ) -> None:
        if stats is not None and not isinstance(stats, StatsAccumulator):
            raise InvalidArgumentError(
                f"stats must be a StatsAccumulator or None, got {type(stats).__name__}"
            )
        if gpu_block_size <= 0 or cpu_block_size <= 0:
            raise InvalidArgumentError(
                f"block sizes must be positive, got gpu_block_size={gpu_block_size}, "
                f"cpu_block_size={cpu_block_size}"
            )
        if cpu_block_size % gpu_block_size != 0:
            raise InvalidArgumentError(
                f"cpu_block_size={cpu_block_size} is not a multiple of "
                f"gpu_block_size={gpu_block_size}"
            )
        if manager.block_size != cpu_block_size:
            raise InvalidArgumentError(
                f"manager.block_size={manager.block_size} differs from "
                f"cpu_block_size={cpu_block_size}"
            )
        if num_workers <= 0:
            raise InvalidArgumentError(f"num_workers must be positive, got {num_workers}")
        self.manager = manager
        self.gpu_block_size = gpu_block_size
        self.cpu_block_size = cpu_block_size
        self.ratio = cpu_block_size // gpu_block_size
        self.num_workers = num_workers
        self._requests: dict[str, _Request] = {}
        self._transfers: dict[int, _Transfer] = {}
        self._next_transfer_id = 0
        self._pending_loads: list[TransferSpec] = []
        # CPU hashes being loaded, with the number of loads of each in flight, so a second
        # request that needs them waits instead of loading the same blocks again.
        self._loading: dict[BlockHash, int] = {}
        self._failed_loads: dict[str, list[int]] = {}
        # Fed with transfers as they complete on every rank: the engine-wide lifecycle.
        self._lifecycle = RequestLifecycle()
        self._failed_ranks: set[int] = set()
        self._usable = UsableLimit(manager, num_workers)
        self._hits = [0, 0, 0, 0]  # blocks cpu, blocks remote, tokens cpu, tokens remote
        self._hits_taken = [0, 0, 0, 0]
        #: The remote tier's scheduler side, or None without one.
        self.remote: RemotePath | None = None
        if remote is not None:
            _check_remote_layout(remote, gpu_block_size, cpu_block_size, num_workers)
            self.remote = RemotePath(
                remote,
                manager,
                num_workers,
                self._take_id,
                max_wait_steps=remote_max_wait_steps,
                max_write_pins=remote_max_write_pins,
            )
            if stats is not None:
                remote.stats.attach(stats)
        #: The accumulator hits are recorded into, or None.
        self.stats = stats

    # -- naming ---------------------------------------------------------------------------

    def cpu_block_hashes(
        self, gpu_block_hashes: Sequence[BlockHash], start: int = 0, end: int | None = None
    ) -> list[BlockHash]:
        """Names of full CPU blocks ``start .. end`` covered by ``gpu_block_hashes`` (one per
        ``ratio``); only those are read, so a step costs what it adds, not the request's length."""
        r = self.ratio
        stop = len(gpu_block_hashes) if end is None else min(end * r, len(gpu_block_hashes))
        return list(gpu_block_hashes[start * r + r - 1 : stop : r])

    # -- step 1: matching and loads ---------------------------------------------------------

    def get_num_new_matched_tokens(
        self,
        req_id: str,
        gpu_block_hashes: Sequence[BlockHash],
        num_tokens: int,
        num_computed_tokens: int,
    ) -> int | None:
        """Tokens beyond ``num_computed_tokens`` that the CPU tier can supply (0 if none).

        ``None`` means "ask again next step": some of the hit blocks are being loaded for
        another request right now, and loading them twice would waste the link; or, with a
        remote tier, the blocks after the CPU hits are being looked up or fetched there.

        At least the last prompt token is always left to compute (the engine needs its logits),
        so a CPU block that would cover it is not counted.
        """
        if num_computed_tokens < 0 or num_computed_tokens > num_tokens:
            raise InvalidArgumentError(
                f"request {req_id!r}: num_computed_tokens={num_computed_tokens} outside "
                f"[0, num_tokens={num_tokens}]"
            )
        if self._failed_ranks:
            return 0  # a failed rank's shard of every block is gone
        usable_blocks = min(
            max(num_tokens - 1, 0) // self.cpu_block_size,
            len(gpu_block_hashes) // self.ratio,
        )
        start = num_computed_tokens // self.cpu_block_size
        if start >= usable_blocks:
            return 0
        names = self.cpu_block_hashes(gpu_block_hashes, start, usable_blocks)
        hits = self.manager.lookup(names)
        if self.remote is not None and self.remote.match(req_id, names, hits):
            return None
        if hits == 0:
            return 0
        if any(h in self._loading for h in names[:hits]):
            return None
        return (start + hits) * self.cpu_block_size - num_computed_tokens

    def update_state_after_alloc(
        self,
        req_id: str,
        gpu_block_hashes: Sequence[BlockHash],
        gpu_block_ids: Sequence[int] | np.ndarray,
        num_computed_tokens: int,
        num_external_tokens: int,
    ) -> None:
        """Pin the matched CPU blocks and queue their load into the request's new GPU blocks.

        ``num_computed_tokens`` is what the GPU prefix cache already holds (a multiple of the
        GPU block size); ``num_external_tokens`` what :meth:`get_num_new_matched_tokens`
        returned. The tail of a CPU block the GPU already holds is skipped.
        """
        if num_external_tokens and self._failed_ranks:
            raise InvalidStateError(
                f"request {req_id!r}: cannot load {num_external_tokens} tokens: rank(s) "
                f"{sorted(self._failed_ranks)} failed, so the CPU tier serves nothing"
            )
        self._requests.setdefault(req_id, _Request())
        if num_external_tokens == 0:
            if self.remote is not None:
                self.remote.take_fetched(req_id)
            return
        gbs, cbs = self.gpu_block_size, self.cpu_block_size
        end = num_computed_tokens + num_external_tokens
        if num_computed_tokens % gbs or end % cbs:
            raise InvalidArgumentError(
                f"request {req_id!r}: computed={num_computed_tokens} must be a multiple of "
                f"gpu_block_size={gbs} and computed+external={end} of cpu_block_size={cbs}"
            )
        first_cpu, end_cpu = num_computed_tokens // cbs, end // cbs
        first_gpu, end_gpu = num_computed_tokens // gbs, end // gbs
        ids = np.asarray(gpu_block_ids, dtype=np.int64)
        if end_gpu > len(ids) or end_gpu > len(gpu_block_hashes):
            raise InvalidArgumentError(
                f"request {req_id!r}: loading up to GPU block {end_gpu} but only "
                f"{len(ids)} GPU block ids and {len(gpu_block_hashes)} hashes were given"
            )
        names = self.cpu_block_hashes(gpu_block_hashes, first_cpu, end_cpu)
        spec = self.manager.prepare_load(names)
        fetched = self.remote.take_fetched(req_id) if self.remote is not None else set()
        self._count_hits(names, first_cpu, num_computed_tokens, end, fetched)
        tid = self._new_transfer(req_id, LOAD, names, ids[first_gpu:end_gpu])
        for h in names:
            self._loading[h] = self._loading.get(h, 0) + 1
        # Loaded blocks become the most recently used: they are about to be reused.
        self.manager.touch(names)
        self._pending_loads.append(
            TransferSpec(tid, req_id, LOAD, ids[first_gpu:end_gpu].copy(), spec.block_ids.copy())
        )

    # -- step 2: what the worker does this step -----------------------------------------------

    def build_step(self, scheduled: Iterable[RequestStep]) -> StepMetadata:
        """Loads queued since the last step, and the stores of the CPU blocks that become full
        in this step's compute (only the blocks ``prepare_store`` allocated)."""
        stores: list[TransferSpec] = []
        for step in scheduled:
            req = self._requests.setdefault(step.req_id, _Request())
            if self._failed_ranks:
                continue  # a store needs every rank's shard
            full = min(
                step.num_tokens_after_step // self.cpu_block_size,
                len(step.gpu_block_hashes) // self.ratio,
                len(step.gpu_block_ids) // self.ratio,
            )
            if full <= req.next_store_block:
                continue
            names = self.cpu_block_hashes(step.gpu_block_hashes, req.next_store_block, full)
            index_of = {h: req.next_store_block + i for i, h in enumerate(names)}
            out = self.manager.prepare_store(names)
            # A request that fails to get room does not retry those blocks: retrying every step
            # would keep evicting for blocks the tier has already said it cannot hold. Unless
            # the tier is still growing (its chunks being pinned): then room is coming, and a
            # failed prepare_store evicted nothing, so the next step asks again.
            if out is not None or self.manager.usable_blocks == self.manager.capacity:
                req.next_store_block = full
            if out is None or not out.block_hashes_to_store:
                continue
            ids = np.asarray(step.gpu_block_ids, dtype=np.int64)
            gpu = np.concatenate(
                [
                    ids[index_of[h] * self.ratio : (index_of[h] + 1) * self.ratio]
                    for h in out.block_hashes_to_store
                ]
            )
            tid = self._new_transfer(step.req_id, STORE, list(out.block_hashes_to_store), gpu)
            stores.append(
                TransferSpec(tid, step.req_id, STORE, gpu, out.store_spec.block_ids.copy())
            )
        loads, self._pending_loads = self._pending_loads, []
        if self.remote is None:
            return StepMetadata(loads=loads, stores=stores)
        fetches, writes = self.remote.take_step()
        return StepMetadata(loads, stores, fetches, writes)

    # -- step 3: results -----------------------------------------------------------------

    def update_from_output(self, output: WorkerOutput) -> None:
        """Apply one rank's finished transfers. A transfer completes once every rank reported
        it: stored blocks become loadable (or are freed if the store failed on any rank),
        loaded blocks are unpinned.

        Raises (applying nothing):
            InvalidArgumentError: ``output.rank`` is not a rank of this scheduler, or
                ``output.ready_cpu_blocks`` is neither None nor a non-negative int.
            InvalidStateError: a transfer id that is not in flight, one named twice, one this
                rank already reported (its output applied twice, or two workers with one rank),
                an output of a rank failed by :meth:`fail_rank`, or fewer ready CPU blocks
                than this rank reported before.
        """
        rank = self._rank(output.rank, "WorkerOutput.rank")
        if rank in self._failed_ranks:
            raise InvalidStateError(
                f"rank {rank} was failed by fail_rank(); its outputs are refused"
            )
        unknown = [tid for tid, _ in output.transfers if tid not in self._transfers]
        if unknown:
            raise InvalidStateError(
                f"rank {rank} reported unknown transfer ids {unknown} (never issued, or already "
                "complete on every rank); nothing was applied"
            )
        ids = [tid for tid, _ in output.transfers]
        if len(set(ids)) != len(ids):
            repeated = sorted({t for t in ids if ids.count(t) > 1})
            raise InvalidStateError(
                f"rank {rank} reported transfer ids {repeated} more than once; nothing was applied"
            )
        again = [tid for tid in ids if rank in self._transfers[tid].outcomes]
        if again:
            raise InvalidStateError(
                f"rank {rank} already reported transfer ids {again}; nothing was applied (is "
                f"this output applied twice, or do two workers have rank {rank}?)"
            )
        ready = self._usable.check(rank, output.ready_cpu_blocks)
        if self.remote is not None:
            self.remote.check_output(rank, output.remote_fetches, output.remote_released)
        elif output.remote_fetches or output.remote_released:
            raise InvalidStateError(
                f"rank {rank} reported remote-tier results but this scheduler has no remote "
                "tier; nothing was applied"
            )
        self._usable.apply(rank, ready)
        for tid, success in output.transfers:
            t = self._transfers[tid]
            t.outcomes[rank] = bool(success)
            if len(t.outcomes) == self.num_workers:
                self._complete(tid, t)
        if self.remote is not None:
            self.remote.apply_output(rank, output.remote_fetches, output.remote_released)

    def pending_reports(self) -> dict[int, list[int]]:
        """For each rank that owes reports, the ids of the transfers in flight it has not
        reported (ascending); ranks that owe nothing are left out."""
        owed: dict[int, list[int]] = {}
        for tid in sorted(self._transfers):
            reported = self._transfers[tid].outcomes
            for rank in range(self.num_workers):
                if rank not in reported:
                    owed.setdefault(rank, []).append(tid)
        return dict(sorted(owed.items()))

    def fail_rank(self, rank: int) -> list[int]:
        """Declare ``rank`` dead (its process or device failed): every transfer in flight it
        has not reported counts as failed on it, and its later outputs are refused. Returns the
        ids of the transfers this completed (their other ranks had all reported).

        Its CPU tier held its shard of every stored block, so from now on nothing is served or
        stored: lookups match nothing, :meth:`build_step` issues no stores and loads are
        refused. Recover with a new scheduler, manager and workers. Calling it again for the
        same rank does nothing.
        """
        r = self._rank(rank, "rank")
        if r in self._failed_ranks:
            return []
        self._failed_ranks.add(r)
        if self.remote is not None:
            self.remote.fail_rank(r)
        done = []
        for tid, t in list(self._transfers.items()):
            if r not in t.outcomes:
                t.outcomes[r] = False
                if len(t.outcomes) == self.num_workers:
                    self._complete(tid, t)
                    done.append(tid)
        return done

    @property
    def usable_cpu_blocks(self) -> int:
        """CPU blocks the manager may hand out now (``manager.usable_blocks``): the capacity,
        or, for a tier still being allocated, what every rank reported ready."""
        return self.manager.usable_blocks

    def ready_cpu_blocks(self) -> dict[int, int]:
        """Per rank, the latest ``WorkerOutput.ready_cpu_blocks`` it reported."""
        return self._usable.ready_by_rank()

    @property
    def failed_ranks(self) -> list[int]:
        """Ranks declared dead by :meth:`fail_rank`, ascending."""
        return sorted(self._failed_ranks)

    def take_finished_loading(self) -> list[str]:
        """Requests whose loads have all completed on every rank since the last call (failed
        ones too: see :meth:`take_failed_loads`). This is the engine-wide answer; a worker's
        :attr:`WorkerOutput.finished_loading` is its rank's share of it."""
        return self._lifecycle.take_finished_loading()

    def take_failed_loads(self) -> dict[str, list[int]]:
        """GPU block ids whose load failed, per request: the engine must recompute them."""
        out, self._failed_loads = self._failed_loads, {}
        return out

    # -- step 4: request lifecycle --------------------------------------------------------

    def request_finished(self, req_id: str) -> bool:
        """The engine finished ``req_id``. ``True``: keep its GPU blocks until its transfers are
        done (it will then appear in :meth:`take_freeable`)."""
        if self.remote is not None:
            self.remote.forget(req_id)
        if req_id not in self._requests:
            return False
        # Any transfer still in flight reads or writes this request's GPU blocks (an aborted
        # request can still be loading), so they must not be handed to another request yet.
        if self._lifecycle.finish(req_id):
            return True
        del self._requests[req_id]
        return False

    def request_preempted(self, req_id: str) -> None:
        """The request lost its GPU blocks; when it is scheduled again it starts from block 0
        (blocks already in the CPU tier are skipped by ``prepare_store``). The worker must have
        flushed its stores first (:meth:`OffloadingWorker.handle_preemptions`)."""
        req = self._requests.get(req_id)
        if req is not None:
            req.next_store_block = 0

    def tier_hits(self) -> TierHits:
        """Blocks and tokens served so far (queued for loading onto the GPU), per tier."""
        return TierHits(*self._hits)

    def take_tier_hits(self) -> TierHits:
        """:meth:`tier_hits` since the last call (interval counters, as ``StatsAccumulator``)."""
        out = TierHits(*(a - b for a, b in zip(self._hits, self._hits_taken, strict=True)))
        self._hits_taken = list(self._hits)
        return out

    def take_freeable(self) -> list[str]:
        """Finished requests held by :meth:`request_finished` whose transfers (stores and
        loads) have now completed on every rank, since the last call: their GPU blocks may be
        freed. The engine-wide answer; a worker's :attr:`WorkerOutput.finished_storing` is its
        rank's share of it."""
        return self._lifecycle.take_freeable()

    def take_events(self) -> list[OffloadingEvent]:
        return self.manager.take_events()

    @property
    def num_transfers_in_flight(self) -> int:
        return len(self._transfers)

    def has_request(self, req_id: str) -> bool:
        return req_id in self._requests

    # -- internals ----------------------------------------------------------------------

    def _take_id(self) -> int:
        """Transfer ids, remote fetches included, from one counter (they only increase)."""
        tid = self._next_transfer_id
        self._next_transfer_id += 1
        return tid

    def _count_hits(
        self,
        names: list[BlockHash],
        first_cpu: int,
        computed: int,
        end: int,
        fetched: set[BlockHash],
    ) -> None:
        """Tokens ``computed .. end`` come from CPU blocks ``names`` (``first_cpu ..``): count
        each block's share under the tier it came from."""
        cbs = self.cpu_block_size
        got = [0, 0, 0, 0]
        for i, h in enumerate(names):
            lo = (first_cpu + i) * cbs
            tier = 1 if h in fetched else 0
            got[tier] += 1
            got[2 + tier] += min(end, lo + cbs) - max(computed, lo)
        for i, n in enumerate(got):
            self._hits[i] += n
        if self.stats is not None and names:
            # One call per reported hit: its split lands in one snapshot.
            self.stats.record_hits(got[0], got[2], got[1], got[3])

    def _new_transfer(
        self, req_id: str, direction: str, names: list[BlockHash], gpu_ids: np.ndarray
    ) -> int:
        tid = self._take_id()
        self._transfers[tid] = _Transfer(req_id, direction, names, gpu_ids)
        self._lifecycle.started(req_id, direction)
        return tid

    def _rank(self, rank: object, what: str) -> int:
        if isinstance(rank, bool):
            raise InvalidArgumentError(f"{what} must be an integer, got {rank!r}")
        try:
            r = operator.index(rank)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentError(f"{what} must be an integer, got {rank!r}") from None
        if not 0 <= r < self.num_workers:
            raise InvalidArgumentError(f"{what}={r} outside [0, num_workers={self.num_workers})")
        return r

    def _complete(self, tid: int, t: _Transfer) -> None:
        """Every rank has reported ``tid`` (or was failed): apply it to the manager."""
        del self._transfers[tid]
        success = all(t.outcomes.values())
        if t.direction == STORE:
            self.manager.complete_store(t.cpu_hashes, success=success)
            if success and self.remote is not None:
                self.remote.stored(t.cpu_hashes)
        else:
            self.manager.complete_load(t.cpu_hashes)
            for h in t.cpu_hashes:
                n = self._loading[h] - 1
                if n:
                    self._loading[h] = n
                else:
                    del self._loading[h]
            if not success:
                self._failed_loads.setdefault(t.req_id, []).extend(int(b) for b in t.gpu_block_ids)
            # Failed ranks can complete a load that was never sent: it must not be sent now.
            self._pending_loads = [s for s in self._pending_loads if s.transfer_id != tid]
        if self._lifecycle.completed(t.req_id, t.direction):
            del self._requests[t.req_id]


def _check_remote_layout(
    remote: RemoteTier, gpu_block_size: int, cpu_block_size: int, num_workers: int
) -> None:
    layout = remote.layout
    got = (layout.gpu_block_size, layout.cpu_block_size, layout.tp_size)
    if got != (gpu_block_size, cpu_block_size, num_workers):
        raise InvalidArgumentError(
            f"the remote tier's layout has gpu_block_size={got[0]}, cpu_block_size={got[1]}, "
            f"tp_size={got[2]}; this scheduler has {gpu_block_size}, {cpu_block_size}, "
            f"num_workers={num_workers}"
        )
