"""LRU scenario, step by step, with every id, eviction and event written out by hand.

Both the Rust manager and the reference model must produce exactly these results.
"""

from __future__ import annotations

from typing import Any

import pytest

from kvoff import LoadStoreSpec, OffloadingEvent, PrepareStoreOutput
from manager_helpers import IMPLS

A, B, C, D, E, F, G, H = b"A", b"B", b"C", b"D", b"E", b"F", b"G", b"H"


def ev(hashes: list[Any], removed: bool) -> OffloadingEvent:
    return OffloadingEvent(hashes, 16, "CPU", removed)


def out(to_store: list[Any], ids: list[int], evicted: list[Any]) -> PrepareStoreOutput:
    return PrepareStoreOutput(to_store, LoadStoreSpec(ids), evicted)


@pytest.mark.parametrize("impl", IMPLS)
def test_lru_scenario(impl: str) -> None:
    m = IMPLS[impl](4, block_size=16, policy="lru", enable_events=True)

    # 1. Fresh ids 0, 1, 2; stores in flight are not hits and are pinned.
    assert m.prepare_store([A, B, C]) == out([A, B, C], [0, 1, 2], [])
    assert [m.block_state(h) for h in (A, B, C)] == [-1, -1, -1]
    assert (m.free, m.resident, m.pinned) == (1, 3, 3)
    assert m.lookup([A]) == 0

    # 2. Completing makes them loadable; lookup counts the ready prefix only.
    m.complete_store([A, B, C])
    assert m.take_events() == [ev([A, B, C], removed=False)]
    assert (m.lookup([A, B, C, D]), m.lookup([B, A]), m.lookup([D, A])) == (3, 2, 0)
    assert m.policy_state() == {"lru": [A, B, C]}

    # 3. touch runs in reverse: B then A, so A (the prefix's first block) is most recent.
    m.touch([A, B])
    assert m.policy_state() == {"lru": [C, B, A]}

    # 4. A load pins B.
    assert m.prepare_load([B]) == LoadStoreSpec([1])
    assert (m.block_state(B), m.pinned) == (1, 1)

    # 5. Two new blocks, one free id (3): evict the LRU evictable block C (id 2).
    #    Fresh id 3 goes first, then C's freed id 2.
    assert m.prepare_store([D, E]) == out([D, E], [3, 2], [C])
    assert m.policy_state() == {"lru": [B, A, D, E]}
    assert m.take_events() == [ev([C], removed=True)]

    # 6. No room: B is loading, A is named in the call, D and E are being stored.
    #    None, nothing evicted, nothing changed but the failure counter.
    assert m.prepare_store([A, F, G]) is None
    assert m.allocation_failures == 1
    assert m.policy_state() == {"lru": [B, A, D, E]}
    assert (m.free, m.resident, m.pinned) == (0, 4, 3)
    assert m.take_events() == []

    # 7. Finish the stores and the load.
    m.complete_store([D, E])
    m.complete_load([B])
    assert [m.block_state(h) for h in (A, B, D, E)] == [0, 0, 0, 0]
    assert m.take_events() == [ev([D, E], removed=False)]

    # 8. Now B (id 1) and D (id 3) go; A is protected by the call. Freed ids are reused
    #    last-in-first-out: D's 3, then B's 1.
    assert m.prepare_store([A, F, G]) == out([F, G], [3, 1], [B, D])
    assert m.policy_state() == {"lru": [A, E, F, G]}
    assert m.take_events() == [ev([B, D], removed=True)]

    # 9. A failed store frees exactly the blocks not yet ready (F, G); A stays.
    m.complete_store([A, F, G], success=False)
    assert m.policy_state() == {"lru": [A, E]}
    assert (m.free, m.resident, m.pinned) == (2, 2, 0)
    assert m.take_events() == []
    assert F not in m and A in m

    # 10. G's id 1 was freed last, so it is reused first.
    assert m.prepare_store([H]) == out([H], [1], [])

    assert (m.blocks_queried, m.blocks_hit) == (1 + 4 + 2 + 2, 0 + 3 + 2 + 0)
    assert (m.blocks_stored, m.blocks_evicted, m.allocation_failures) == (3 + 2 + 2 + 1, 3, 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_store_of_present_hashes_only_skips_them(impl: str) -> None:
    m = IMPLS[impl](2, policy="lru")
    m.prepare_store([1, 2])
    # Present hashes are skipped even while their store is in flight.
    assert m.prepare_store([2, 1]) == out([], [], [])
    m.complete_store([1, 2])
    assert m.prepare_store([1, 2]) == out([], [], [])
    assert m.blocks_stored == 2


@pytest.mark.parametrize("impl", IMPLS)
def test_int_and_bytes_hashes_are_different_blocks(impl: str) -> None:
    m = IMPLS[impl](4)
    assert m.prepare_store([5, b"\x05", 2**100, b"\x05\x00"]) == out(
        [5, b"\x05", 2**100, b"\x05\x00"], [0, 1, 2, 3], []
    )
    m.complete_store([5, b"\x05", 2**100, b"\x05\x00"])
    assert m.lookup([b"\x05", 5, 2**100]) == 3
    assert m.block_id(b"\x05\x00") == 3
    assert b"\x00\x05" not in m and 6 not in m


@pytest.mark.parametrize("impl", IMPLS)
def test_events_are_off_by_default(impl: str) -> None:
    m = IMPLS[impl](1)
    m.prepare_store([1])
    m.complete_store([1])
    m.prepare_store([2])
    assert m.take_events() == []
