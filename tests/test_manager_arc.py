"""ARC scenario, step by step: T1/T2, ghost lists B1/B2, the target p, promotions and
evictions, with every id written out by hand. Both implementations must agree with it."""

from __future__ import annotations

from typing import Any

import pytest

from kvoff import LoadStoreSpec, OffloadingEvent, PrepareStoreOutput
from manager_helpers import IMPLS

A, B, C, D, E, F, G, H = b"A", b"B", b"C", b"D", b"E", b"F", b"G", b"H"


def out(to_store: list[Any], ids: list[int], evicted: list[Any]) -> PrepareStoreOutput:
    return PrepareStoreOutput(to_store, LoadStoreSpec(ids), evicted)


def lists(t1: list[Any], t2: list[Any], b1: list[Any], b2: list[Any], p: int) -> dict[str, Any]:
    return {"t1": t1, "t2": t2, "b1": b1, "b2": b2, "target": p}


@pytest.mark.parametrize("impl", IMPLS)
def test_arc_scenario(impl: str) -> None:
    m = IMPLS[impl](4, policy="arc", enable_events=True)

    # 1. New blocks enter T1.
    assert m.prepare_store([A, B, C, D]) == out([A, B, C, D], [0, 1, 2, 3], [])
    m.complete_store([A, B, C, D])
    assert m.policy_state() == lists([A, B, C, D], [], [], [], 0)

    # 2. Touching ready blocks promotes them to T2 (in reverse order: B, then A).
    m.touch([A, B])
    assert m.policy_state() == lists([C, D], [B, A], [], [], 0)

    # 3. Full tier, |T1| = 2 > p = 0: T1's LRU block C goes, E takes its id 2, and C is
    #    remembered in B1.
    assert m.prepare_store([E]) == out([E], [2], [C])
    assert m.policy_state() == lists([D, E], [B, A], [C], [], 0)
    # A touch of a block whose store is in flight is not a reuse: E stays in T1.
    m.touch([E])
    assert m.policy_state() == lists([D, E], [B, A], [C], [], 0)
    m.complete_store([E])

    # 4. A ghost hit in B1: p += max(1, |B2| // |B1|) = max(1, 0) = 1.
    m.touch([C])
    assert m.policy_state()["target"] == 1

    # 5. Storing ghost C again: it goes straight to T2. The victim comes from T1 because
    #    |T1| = 2 > p = 1: D (id 3), whose id C then takes.
    assert m.prepare_store([C]) == out([C], [3], [D])
    assert m.policy_state() == lists([E], [B, A, C], [D], [], 1)
    m.complete_store([C])

    # 6. Pin B, then store two blocks: |T1| = 1 is not > p = 1, so T2 gives its evictable
    #    LRU blocks, skipping the pinned B: A (id 0), then C (id 3). Ids reused LIFO: 3, 0.
    m.prepare_load([B])
    assert m.prepare_store([F, G]) == out([F, G], [3, 0], [A, C])
    assert m.policy_state() == lists([E, F, G], [B], [D], [A, C], 1)

    # 7. A ghost hit in B2: p -= max(1, |B1| // |B2|) = max(1, 0) = 1.
    m.touch([A])
    assert m.policy_state() == lists([E, F, G], [B], [D], [C, A], 0)

    # 8. With p = 0, T1 gives first: E (id 2).
    m.complete_store([F, G])
    m.complete_load([B])
    assert m.prepare_store([H]) == out([H], [2], [E])
    assert m.policy_state() == lists([F, G, H], [B], [D, E], [C, A], 0)

    # 9. A failed store removes H without making it a ghost.
    m.complete_store([H], success=False)
    assert m.policy_state() == lists([F, G], [B], [D, E], [C, A], 0)
    assert (m.free, m.resident, m.pinned) == (1, 3, 0)

    assert m.take_events() == [
        OffloadingEvent([A, B, C, D], 16, "CPU", False),
        OffloadingEvent([C], 16, "CPU", True),
        OffloadingEvent([E], 16, "CPU", False),
        OffloadingEvent([D], 16, "CPU", True),
        OffloadingEvent([C], 16, "CPU", False),
        OffloadingEvent([A, C], 16, "CPU", True),
        OffloadingEvent([F, G], 16, "CPU", False),
        OffloadingEvent([E], 16, "CPU", True),
    ]


@pytest.mark.parametrize("impl", IMPLS)
def test_ghost_lists_are_bounded_by_capacity(impl: str) -> None:
    m = IMPLS[impl](2, policy="arc")
    for h in range(10):
        m.prepare_store([h])
        m.complete_store([h])
    # Each new block evicted T1's oldest; B1 keeps only the last `capacity` of them.
    assert m.policy_state() == lists([8, 9], [], [6, 7], [], 0)
    # A forgotten ghost (5) is no longer a ghost: touching it changes nothing.
    m.touch([5])
    assert m.policy_state()["target"] == 0
    m.touch([6])
    assert m.policy_state()["target"] == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_target_is_capped_at_capacity(impl: str) -> None:
    m = IMPLS[impl](2, policy="arc")
    for h in range(4):
        m.prepare_store([h])
        m.complete_store([h])
    assert m.policy_state()["b1"] == [0, 1]
    for _ in range(5):
        m.touch([0])
    assert m.policy_state()["target"] == 2
