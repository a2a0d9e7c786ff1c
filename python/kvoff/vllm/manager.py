"""vLLM 0.33's ``OffloadingManager`` over kvoff's native ``VllmOffloadingManager``.

Every vLLM call is one Rust call: ``kvoff._core.VllmOffloadingManager`` implements the 0.33
contract itself (vLLM's ``CPUOffloadingManager`` with its ``lru`` and ``arc`` policies, the
reuse filter, failed stores, ``reset_cache``; docs/VLLM_NOTES.md §4) and returns vLLM's own
value classes, which this module hands it at construction so that the extension never imports
vLLM. This class only adds vLLM's ABC and the two stats views; the hot methods are the native
object's bound methods, set on the instance so that a call does not pass through Python.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

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
)
from vllm.v1.kv_offload.cpu.common import CPULoadStoreSpec, CPUOffloadingMetrics
from vllm.v1.metrics.cache_hit_source import CacheHitSource

import kvoff
from kvoff._core import VllmOffloadingManager

__all__ = ["KvoffOffloadingManager"]

_CHUNK_LEVEL = RequestOffloadingContext()


class KvoffOffloadingManager(OffloadingManager):
    """The CPU tier's bookkeeping for vLLM's scheduler, held by kvoff's Rust tier.

    ``num_chunks`` CPU chunks (0 is allowed: every store is refused) of ``tokens_per_chunk``
    tokens; ``policy`` is ``"lru"`` or ``"arc"`` with vLLM 0.33's semantics;
    ``store_threshold >= 2`` stores a chunk only once it was offered that many times (counted
    over the last ``max_tracker_size`` keys). ``info`` is what vLLM publishes on
    ``vllm:kv_offload_config_info``.
    """

    def __init__(
        self,
        num_chunks: int,
        tokens_per_chunk: int,
        policy: str = "lru",
        enable_events: bool = False,
        info: ConfigInfoMapping | None = None,
        store_threshold: int = 0,
        max_tracker_size: int = 64_000,
    ) -> None:
        self.medium = Medium.CPU
        self._tokens_per_chunk = tokens_per_chunk
        self._info: ConfigInfoMapping = dict(info or {})
        self._stats = kvoff.StatsAccumulator()
        core = VllmOffloadingManager(
            num_chunks,
            policy,
            enable_events,
            store_threshold,
            max_tracker_size,
            (LookupResult.MISS, LookupResult.HIT, LookupResult.HIT_PENDING),
            CPULoadStoreSpec,
            PrepareStoreOutput,
            OffloadingEvent,
            Medium.CPU,
            ReqContext,
        )
        self._core = core
        # The native methods take vLLM's arguments as they come: bind them on the instance.
        self.lookup = core.lookup  # type: ignore[method-assign]
        self.prepare_load = core.prepare_load  # type: ignore[method-assign]
        self.prepare_store = core.prepare_store  # type: ignore[method-assign]
        self.complete_load = core.complete_load  # type: ignore[method-assign]
        self.complete_store = core.complete_store  # type: ignore[method-assign]
        self.touch = core.touch  # type: ignore[method-assign]
        self.on_request_finished = core.on_request_finished  # type: ignore[method-assign]
        self.take_events = core.take_events  # type: ignore[method-assign]
        self.reset_cache = core.reset_cache  # type: ignore[method-assign]

    # The ABC's methods, for callers that go through the class (the instance binds the native
    # ones above).
    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        return self._core.lookup(key, req_context)  # type: ignore[no-any-return]

    def prepare_load(self, keys: Collection[OffloadKey], req_context: ReqContext) -> LoadStoreSpec:
        return self._core.prepare_load(keys, req_context)  # type: ignore[no-any-return]

    def prepare_store(
        self, keys: Collection[OffloadKey], req_context: ReqContext
    ) -> PrepareStoreOutput | None:
        return self._core.prepare_store(keys, req_context)  # type: ignore[no-any-return]

    def complete_load(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        self._core.complete_load(keys, req_context)

    def complete_store(
        self, keys: Collection[OffloadKey], req_context: ReqContext, success: bool = True
    ) -> None:
        self._core.complete_store(keys, req_context, success)

    def touch(self, keys: Collection[OffloadKey], req_context: ReqContext) -> None:
        self._core.touch(keys, req_context)

    def on_request_finished(self, req_context: ReqContext) -> None:
        self._core.on_request_finished(req_context)

    def take_events(self) -> Iterable[OffloadingEvent]:
        return self._core.take_events()  # type: ignore[no-any-return]

    def reset_cache(self) -> None:
        self._core.reset_cache()

    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        self._core.on_new_request(req_context)
        return _CHUNK_LEVEL

    def get_load_source(self, key: OffloadKey, req_context: ReqContext) -> CacheHitSource:
        return CacheHitSource.HOST

    def config_info(self) -> Sequence[ConfigInfoMapping]:
        return [self._info]

    def get_stats(self) -> VllmStats:
        """vLLM's CPU-tier gauges, allocation histogram and (with a reuse filter) skipped-store
        counter, computed as vLLM's own manager computes them."""
        capacity, in_use, write_pending, sizes, skipped = self._core.take_usage()
        stats = VllmStats()
        usage = in_use / capacity if capacity else 0.0
        write = write_pending / capacity if capacity else 0.0
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_USAGE_PERC, usage)
        for size in sizes:
            stats.observe_histogram(CPUOffloadingMetrics.CPU_ALLOCATION_SIZE, size)
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_WRITE_USAGE_PERC, write)
        stats.set_gauge(CPUOffloadingMetrics.CPU_CACHE_READ_USAGE_PERC, max(usage - write, 0.0))
        if self._core.store_threshold >= 2:
            stats.increase_counter(CPUOffloadingMetrics.STORES_SKIPPED, skipped)
        return stats

    # ----------------------------------------------------------------- kvoff extras

    def take_kvoff_stats(self) -> kvoff.OffloadingConnectorStats:
        """kvoff's own snapshot of the interval: lookups (one per key looked up), chunks stored
        and evicted, allocation failures, occupancy."""
        core = self._core
        lookups, hits, stored, evicted, failures = core.take_counters()
        if lookups:
            bs = self._tokens_per_chunk
            self._stats.record_lookup(lookups, hits, lookups * bs, hits * bs)
        if stored:
            self._stats.record_stored(stored)
        if evicted:
            self._stats.record_evicted(evicted)
        for _ in range(failures):
            self._stats.record_allocation_failure()
        self._stats.set_occupancy(core.num_chunks, len(core), core.pinned)
        return self._stats.take()

    @property
    def core(self) -> VllmOffloadingManager:
        """The native tier."""
        return self._core
