"""The manager adapter against vLLM 0.33's CPUOffloadingManager, call for call: the same calls
give the same answers (LookupResult, chunk ids, evicted keys, None) and the same events."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from vllm.v1.kv_offload.base import (
    LookupResult,
    OffloadKey,
    ReqContext,
    make_offload_key,
)
from vllm.v1.kv_offload.cpu.common import CPULoadStoreSpec
from vllm.v1.kv_offload.cpu.manager import CPUOffloadingManager

from kvoff.vllm.manager import KvoffOffloadingManager


def key(i: int, group: int = 0) -> OffloadKey:
    return make_offload_key(i.to_bytes(8, "big") * 4, group)


def keys(*ids: int) -> list[OffloadKey]:
    return [key(i) for i in ids]


def ctx(req: str, positions: dict[int, int] | None = None) -> ReqContext:
    c = ReqContext(req_id=req)
    for i, pos in (positions or {}).items():
        c.set_offload_key_position(key(i), pos)
    return c


def pair(n: int, policy: str = "lru") -> tuple[Any, Any]:
    return (
        CPUOffloadingManager(num_chunks=n, cache_policy=policy, enable_events=True),
        KvoffOffloadingManager(n, 16, policy=policy, enable_events=True),
    )


def out(result: Any) -> Any:
    """A manager answer as plain values."""
    if result is None or isinstance(result, LookupResult):
        return result
    if isinstance(result, CPULoadStoreSpec):
        return ("spec", result.block_ids.tolist())
    return (result.keys_to_store, result.store_spec.block_ids.tolist(), result.evicted_keys)


def events(m: Any) -> list[tuple[list[OffloadKey], bool, bool]]:
    return [(list(e.keys), e.removed, e.metadata_only) for e in m.take_events()]


def both(ms: tuple[Any, Any], call: str, *args: Any) -> Any:
    a, b = (out(getattr(m, call)(*args)) for m in ms)
    assert a == b, f"{call}{args}: vLLM {a!r}, kvoff {b!r}"
    return a


def test_lookup_states_store_order_and_load_ids() -> None:
    ms = pair(4)
    c = ctx("r")
    for m in ms:
        m.on_new_request(c)
    assert both(ms, "lookup", key(1), c) is LookupResult.MISS
    assert both(ms, "prepare_store", keys(3, 1, 2), c) == (keys(3, 1, 2), [0, 1, 2], [])
    assert both(ms, "lookup", key(1), c) is LookupResult.HIT_PENDING
    both(ms, "complete_store", set(keys(3, 1)), c)
    assert both(ms, "lookup", key(1), c) is LookupResult.HIT
    assert both(ms, "lookup", key(2), c) is LookupResult.HIT_PENDING
    assert both(ms, "prepare_load", keys(1, 3), c) == ("spec", [1, 0])
    a, b = (events(m) for m in ms)
    assert a == b
    assert sorted(a[0][0]) == sorted(keys(3, 1)) and a[0][1:] == (False, False)


def test_store_never_evicts_offered_keys_and_none_changes_nothing() -> None:
    ms = pair(3)
    c = ctx("r")
    both(ms, "prepare_store", keys(1, 2, 3), c)
    both(ms, "complete_store", keys(1, 2, 3), c)
    # 1 and 2 are offered again (already stored): the room for 4 must come from 3.
    assert both(ms, "prepare_store", keys(1, 2, 4), c) == ([key(4)], [2], [key(3)])
    # 4 is in flight and 1, 2 are offered: nothing evictable is left for 5 and 6.
    assert both(ms, "prepare_store", keys(1, 2, 5, 6), c) is None
    assert [both(ms, "lookup", k, c) for k in keys(1, 2, 4, 5)] == [
        LookupResult.HIT,
        LookupResult.HIT,
        LookupResult.HIT_PENDING,
        LookupResult.MISS,
    ]
    a, b = (events(m) for m in ms)
    assert a == b
    assert [(sorted(k), r, mo) for k, r, mo in a] == [
        (sorted(keys(1, 2, 3)), False, False),
        ([key(3)], True, False),
    ]


def test_complete_store_tolerates_absent_keys_and_failed_store_emits_removal() -> None:
    ms = pair(4)
    c = ctx("r")
    both(ms, "prepare_store", keys(1, 2), c)
    both(ms, "complete_store", [key(1), key(9)], c)  # 9 was never prepared
    both(ms, "complete_store", [key(2)], c, False)
    assert both(ms, "lookup", key(2), c) is LookupResult.MISS
    # Fresh ids come first; the failed chunk's id 1 is reused once they run out.
    assert both(ms, "prepare_store", keys(7, 8, 5), c) == (keys(7, 8, 5), [2, 3, 1], [])
    a, b = (events(m) for m in ms)
    assert a == b == [([key(1)], False, False), ([key(2)], True, True)]


def test_stale_failed_store_removal_is_pruned_when_the_key_is_back() -> None:
    ms = pair(4)
    c = ctx("r")
    both(ms, "prepare_store", keys(1), c)
    both(ms, "complete_store", keys(1), c, False)
    both(ms, "prepare_store", keys(1), c)  # retried before the events were drained
    a, b = (events(m) for m in ms)
    assert a == b == []


def test_recency_is_applied_when_a_request_finishes() -> None:
    ms = pair(4)
    first, second = ctx("a", {1: 16, 2: 32}), ctx("b", {3: 16, 4: 32})
    for c, ks in ((first, keys(1, 2)), (second, keys(3, 4))):
        for m in ms:
            m.on_new_request(c)
        both(ms, "prepare_store", ks, c)
        both(ms, "complete_store", ks, c)
    # a reuses nothing yet; b finishes first, then a: a is now the most recent request.
    for c in (second, first):
        for m in ms:
            m.on_request_finished(c)
    # Room for two: b's tail goes first, then b's head; their ids come back last-in-first-out.
    assert both(ms, "prepare_store", keys(5, 6), ctx("c")) == (keys(5, 6), [2, 3], keys(4, 3))


def test_reset_cache_forgets_everything() -> None:
    ms = pair(2)
    c = ctx("r")
    both(ms, "prepare_store", keys(1, 2), c)
    for m in ms:
        m.reset_cache()
    assert both(ms, "lookup", key(1), c) is LookupResult.MISS
    assert both(ms, "prepare_store", keys(3, 4), ctx("s")) == (keys(3, 4), [0, 1], [])


def test_get_stats_gauges_and_allocation_sizes_match() -> None:
    ms = pair(4)
    c = ctx("r")
    both(ms, "prepare_store", keys(1, 2, 3), c)
    both(ms, "complete_store", keys(1), c)
    both(ms, "prepare_load", keys(1), c)
    a, b = (m.get_stats().data for m in ms)
    assert a == b


@pytest.mark.parametrize("policy", ["lru", "arc"])
def test_handed_back_objects_are_the_ones_vllm_hands_back(policy: str) -> None:
    """Evicted keys are the very objects that were stored, the eviction event shares
    prepare_store's evicted list, and each spec holds what CPULoadStoreSpec's constructor makes
    (kvoff builds it without the constructor's copy of the ids)."""
    for m in pair(2, policy):
        c = ctx("r")
        stored = [key(1), key(2)]
        first = m.prepare_store(stored, c)
        m.complete_store(stored, c)
        loaded = m.prepare_load([key(2)], c)
        m.complete_load([key(2)], c)
        second = m.prepare_store([key(3), key(4)], c)
        name = type(m).__name__
        assert sorted(second.evicted_keys) == sorted(stored), name
        assert all(any(e is s for s in stored) for e in second.evicted_keys), name
        assert list(m.take_events())[-1].keys is second.evicted_keys, name
        for spec, ids in (
            (first.store_spec, [0, 1]),
            (loaded, [1]),
            (second.store_spec, second.store_spec.block_ids.tolist()),
        ):
            ref = CPULoadStoreSpec(ids)
            assert type(spec) is CPULoadStoreSpec, name
            assert vars(spec).keys() == vars(ref).keys(), name
            a, b = spec.block_ids, ref.block_ids
            assert (a.dtype, a.shape, a.tolist()) == (b.dtype, b.shape, b.tolist()), name
            assert (a.flags.writeable, a.flags.c_contiguous) == (True, True), name
