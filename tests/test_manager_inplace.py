"""Short calls on an exact list read the caller's list in place; everything else copies it.
Both paths must give the same answers, and neither may hand the caller's list back."""

from __future__ import annotations

import threading

from kvoff import OffloadingManager


class Digest(bytes):
    """A bytes subclass: not read in place (the call falls back to a private copy)."""


def test_mixed_items_fall_back_and_agree_with_tuples() -> None:
    # Exact bytes and small ints are read in place; a subclass, a bool and a 100-bit int are
    # not, so these lists take the copying path. Ids must match the same call on tuples.
    mixed: list[bytes | int] = [b"a" * 32, Digest(b"b" * 32), 7, True, 2**100, b"", b"c" * 40]
    plain: list[bytes | int] = [b"x" * 32, b"y" * 32, 11, -3]
    by_list, by_tuple = OffloadingManager(32), OffloadingManager(32)
    for batch in (mixed, plain):
        assert by_list.prepare_store(list(batch)) is not None
        by_list.complete_store(list(batch))
        assert by_tuple.prepare_store(tuple(batch)) is not None
        by_tuple.complete_store(tuple(batch))
    for h in mixed + plain:
        assert by_list.block_id(h) == by_tuple.block_id(h)
    assert by_list.block_id(b"a" * 32) == 0 and by_list.block_id(b"c" * 40) == 6
    assert by_list.block_id(True) == 3 and by_list.block_id(1) == 3  # bool is an int
    assert by_list.lookup(mixed) == len(mixed) and by_list.lookup(plain) == len(plain)


def test_outputs_are_new_lists_not_the_callers() -> None:
    m = OffloadingManager(4)
    hashes = [bytes([i]) * 32 for i in range(4)]
    out = m.prepare_store(hashes)
    assert out is not None
    assert out.block_hashes_to_store == hashes and out.block_hashes_to_store is not hashes
    hashes[0] = b"changed"
    assert out.block_hashes_to_store[0] == bytes([0]) * 32
    m.complete_store(out.block_hashes_to_store)
    fresh = [b"f" * 32]
    out = m.prepare_store(fresh)
    assert out is not None and out.block_hashes_evicted == [bytes([0]) * 32]
    assert out.block_hashes_to_store is not fresh


def test_short_calls_while_another_thread_holds_the_lock() -> None:
    # Long touches release the GIL while holding the manager's lock, so short calls from the
    # other thread find it taken and must take the copying path; every answer stays exact.
    n = 100_000
    m = OffloadingManager(n)
    keys = [i.to_bytes(32, "little") for i in range(n)]
    for i in range(0, n, 4096):
        m.prepare_store(keys[i : i + 4096])
        m.complete_store(keys[i : i + 4096])
    stop = threading.Event()
    errors: list[BaseException] = []

    def toucher() -> None:
        try:
            while not stop.is_set():
                m.touch(keys)
        except BaseException as e:  # surfaced below, in the main thread
            errors.append(e)

    t = threading.Thread(target=toucher)
    t.start()
    try:
        for start in range(0, 200 * 97, 97):
            run = keys[start : start + 64]
            assert m.lookup(run) == 64
            assert m.lookup([*run[:10], b"absent" * 6, *run[10:]]) == 10
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert m.resident == n and m.pinned == 0
