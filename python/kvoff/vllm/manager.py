"""vLLM 0.33's ``OffloadingManager`` contract over kvoff's Rust manager (phase A adapter).

This is the one place that translates between vLLM's per-key calls (``OffloadKey`` bytes,
``ReqContext``, ``LookupResult``) and ``kvoff.OffloadingManager``'s 0.16-shaped batch API. It is
deliberately a single file: phase B replaces its internals with a binding-level class that
implements the same contract in Rust, one call per vLLM call.

Where kvoff's current core departs from vLLM's ``CPUOffloadingManager`` the adapter bridges what
it can with the core's public calls (docs/VLLM_NOTES.md has the full table):

- ``complete_store`` skips keys that are absent (vLLM tolerates them; the core raises), and a
  failed store's removal event (``removed=True, metadata_only=True``) is made here, since the
  core emits nothing on failure;
- recency is applied when a request finishes, from the keys the request loaded or offered, in
  token-position order (vLLM's ``on_request_finished``); under LRU a request's resident keys are
  also re-ordered after each of its stores and loads so that, while it runs, its tail is older
  than its head (vLLM ranks an active request's keys by position). That is exact for one
  request at a time; with requests interleaved vLLM keeps an older request's rank, which this
  emulation cannot;
- under ARC a ghost key offered for storing adapts the target once per request before it is
  stored (vLLM's ``on_store_miss``), through the core's ``touch``. What the core's ARC does
  differently (ghosts re-enter T2, integer target, the T1 victim test) stays different.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from vllm.distributed.kv_transfer.kv_connector.v1.offloading.metrics import (
    OffloadingConnectorStats as VllmStats,
)
from vllm.v1.kv_offload.base import (
    ConfigInfoMapping,
    LoadStoreSpec,
    LookupResult,
    Medium,
    OffloadingEvent,
    OffloadingManager,
    OffloadKey,
    PrepareStoreOutput,
    ReqContext,
    RequestOffloadingContext,
    get_offload_group_idx,
)
from vllm.v1.kv_offload.cpu.common import CPULoadStoreSpec, CPUOffloadingMetrics
from vllm.v1.metrics.cache_hit_source import CacheHitSource

import kvoff

__all__ = ["KvoffOffloadingManager"]


@dataclass(slots=True)
class _RequestAccess:
    """The keys one request loaded or offered, as vLLM's manager classifies them."""

    owner: object
    generation: int
    key_groups: dict[int, list[OffloadKey]] = field(default_factory=dict)
    seen: set[OffloadKey] = field(default_factory=set)
    inserted: set[OffloadKey] = field(default_factory=set)
    reused: set[OffloadKey] = field(default_factory=set)
    store_misses: set[OffloadKey] = field(default_factory=set)
    finished: bool = False


class KvoffOffloadingManager(OffloadingManager):
    """The CPU tier's bookkeeping for vLLM's scheduler, held by kvoff's Rust manager.

    ``num_chunks`` CPU chunks of ``tokens_per_chunk`` tokens; ``policy`` is ``"lru"`` or
    ``"arc"``. CPU chunk ids come back as vLLM's ``CPULoadStoreSpec`` so any CPU worker can use
    them. ``info`` is the static facts vLLM publishes on ``vllm:kv_offload_config_info``.
    """

    def __init__(
        self,
        num_chunks: int,
        tokens_per_chunk: int,
        policy: str = "lru",
        enable_events: bool = False,
        info: ConfigInfoMapping | None = None,
    ) -> None:
        self.medium = Medium.CPU
        self._num_chunks = num_chunks
        self._tokens_per_chunk = tokens_per_chunk
        self._policy = policy
        self._enable_events = enable_events
        self._info: ConfigInfoMapping = dict(info or {})
        self._stats = kvoff.StatsAccumulator()
        self._core = self._new_core()
        self._generation = 0
        self._events: list[OffloadingEvent] = []
        self._write_pending = 0  # chunks with a store in flight
        self._allocation_sizes: list[int] = []
        self._lookups = 0
        self._lookup_hits = 0

    def _new_core(self) -> kvoff.OffloadingManager:
        return kvoff.OffloadingManager(
            self._num_chunks,
            block_size=self._tokens_per_chunk,
            policy=self._policy,
            enable_events=self._enable_events,
            stats=self._stats,
        )

    # ----------------------------------------------------------------- per-request state

    def _access(self, ctx: ReqContext) -> _RequestAccess:
        state = ctx.get_state(_RequestAccess)
        if state is None or state.owner is not self or state.generation != self._generation:
            state = _RequestAccess(owner=self, generation=self._generation)
            ctx.set_state(state)
        return state

    def _record(self, keys: Iterable[OffloadKey], ctx: ReqContext) -> _RequestAccess:
        state = self._access(ctx)
        for key in keys:
            if key not in state.seen:
                state.seen.add(key)
                state.key_groups.setdefault(get_offload_group_idx(key), []).append(key)
        return state

    @staticmethod
    def _prefix_order(state: _RequestAccess, ctx: ReqContext) -> tuple[list[OffloadKey], bool]:
        """Head to tail: groups in index order, then by token position when every key has one
        (the flag says whether they all had)."""
        keys = [k for g in sorted(state.key_groups) for k in state.key_groups[g]]
        positions = {k: p for k in keys if (p := ctx.get_offload_key_position(k)) is not None}
        positioned = len(positions) == len(keys)
        if positioned:
            keys.sort(key=positions.__getitem__)
        return keys, positioned

    def _order_running_request(self, state: _RequestAccess, ctx: ReqContext) -> None:
        if self._policy != "lru":
            return
        keys, positioned = self._prefix_order(state, ctx)
        if not positioned:
            return  # vLLM ranks keys without a position by insertion, as the core already does
        core = self._core
        resident = [k for k in keys if k in core]
        if resident:
            core.touch(resident)  # the core applies a touch last key first: the head ends newest

    def _drain_core_events(self) -> None:
        if not self._enable_events:
            return
        for ev in self._core.take_events():
            self._events.append(
                OffloadingEvent(keys=list(ev.block_hashes), medium=self.medium, removed=ev.removed)
            )

    # ----------------------------------------------------------------- OffloadingManager

    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        self._access(req_context)
        return RequestOffloadingContext()

    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        core = self._core
        self._lookups += 1
        if key not in core:
            return LookupResult.MISS
        if core.block_state(key) < 0:
            return LookupResult.HIT_PENDING
        self._lookup_hits += 1
        return LookupResult.HIT

    def get_load_source(self, key: OffloadKey, req_context: ReqContext) -> CacheHitSource:
        return CacheHitSource.HOST

    def prepare_load(self, keys: Collection[OffloadKey], req_context: ReqContext) -> LoadStoreSpec:
        keys = list(keys)
        spec = self._core.prepare_load(keys)
        state = self._record(keys, req_context)
        state.reused.update(k for k in keys if k not in state.inserted)
        self._order_running_request(state, req_context)
        return CPULoadStoreSpec(spec.block_ids.tolist())

    def touch(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        # vLLM's touch tolerates repeats; the last-applied (first) occurrence is what counts.
        self._core.touch(list(dict.fromkeys(keys)))

    def complete_load(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        self._core.complete_load(list(keys))

    def prepare_store(
        self, keys: Collection[OffloadKey], req_context: ReqContext
    ) -> PrepareStoreOutput | None:
        keys = list(keys)
        core = self._core
        candidates: list[OffloadKey] = []
        ready_existing: list[OffloadKey] = []
        for key in keys:
            if key not in core:
                candidates.append(key)
            elif core.block_state(key) >= 0:
                ready_existing.append(key)
        state = self._access(req_context)
        if self._policy == "arc":
            misses = [k for k in candidates if k not in state.store_misses]
            if misses:
                core.touch(misses)  # a ghost among them adapts the ARC target, once per request
                state.store_misses.update(misses)
        offered = set(candidates).union(ready_existing)
        self._record((k for k in keys if k in offered), req_context)
        state.reused.update(k for k in ready_existing if k not in state.inserted)
        if not candidates:
            self._order_running_request(state, req_context)
            return PrepareStoreOutput(
                keys_to_store=[], store_spec=CPULoadStoreSpec([]), evicted_keys=[]
            )
        self._allocation_sizes.append(len(candidates))
        out = core.prepare_store(keys)
        self._drain_core_events()
        if out is not None:
            self._write_pending += len(out.block_hashes_to_store)
            state.inserted.update(out.block_hashes_to_store)
        # vLLM re-ranks the request's keys even when the store cannot fit.
        self._order_running_request(state, req_context)
        if out is None:
            return None
        to_store = list(out.block_hashes_to_store)
        return PrepareStoreOutput(
            keys_to_store=to_store,
            store_spec=CPULoadStoreSpec(out.store_spec.block_ids.tolist()),
            evicted_keys=list(out.block_hashes_evicted),
        )

    def complete_store(
        self, keys: Collection[OffloadKey], req_context: ReqContext, success: bool = True
    ) -> None:
        core = self._core
        present = [k for k in keys if k in core]
        pending = [k for k in present if core.block_state(k) < 0]
        if not pending:
            return
        core.complete_store(pending, success)
        self._write_pending -= len(pending)
        if success:
            self._drain_core_events()
        elif self._enable_events:
            self._events.append(
                OffloadingEvent(keys=pending, medium=self.medium, removed=True, metadata_only=True)
            )

    def on_request_finished(self, req_context: ReqContext) -> None:
        state = req_context.get_state(_RequestAccess)
        if (
            state is None
            or state.owner is not self
            or state.generation != self._generation
            or state.finished
        ):
            return
        state.finished = True
        core = self._core
        ordered = [k for k in self._prefix_order(state, req_context)[0] if k in core]
        if self._policy == "arc":
            # Only reuse counts as an access under ARC; keys this request only inserted keep
            # their list (vLLM moves them to their list's recent end, which the core cannot).
            ordered = [k for k in ordered if k in state.reused]
        if ordered:
            core.touch(ordered)

    def reset_cache(self) -> None:
        self._core = self._new_core()
        self._generation += 1
        self._write_pending = 0

    def take_events(self) -> Iterator[OffloadingEvent]:
        events, self._events = self._events, []
        for event in events:
            if event.metadata_only:
                # A retry may already hold the key again; its removal is stale then.
                keys = [k for k in event.keys if k not in self._core]
                if not keys:
                    continue
                event = replace(event, keys=keys)
            yield event

    def config_info(self) -> Sequence[ConfigInfoMapping]:
        return [self._info]

    def get_stats(self) -> VllmStats:
        """vLLM's CPU-tier gauges and allocation histogram (same quantities as vLLM's own)."""
        stats = VllmStats()
        n = self._num_chunks
        usage = self._core.pinned / n if n else 0.0
        write = self._write_pending / n if n else 0.0
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_USAGE_PERC, usage)
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_WRITE_USAGE_PERC, write)
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_READ_USAGE_PERC, max(usage - write, 0.0))
        for size in self._allocation_sizes:
            stats.observe_histogram(CPUOffloadingMetrics.CPU_ALLOCATION_SIZE, size)
        self._allocation_sizes.clear()
        return stats

    # ----------------------------------------------------------------- kvoff extras

    def take_kvoff_stats(self) -> kvoff.OffloadingConnectorStats:
        """kvoff's own snapshot of the interval: lookups (one per key looked up), blocks stored
        and evicted, allocation failures, occupancy."""
        if self._lookups:
            bs = self._tokens_per_chunk
            self._stats.record_lookup(
                self._lookups, self._lookup_hits, self._lookups * bs, self._lookup_hits * bs
            )
            self._lookups = self._lookup_hits = 0
        return self._stats.take()

    @property
    def core(self) -> kvoff.OffloadingManager:
        """The Rust manager (replaced by ``reset_cache``)."""
        return self._core
