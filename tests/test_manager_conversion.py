"""Hash arguments become the call's own keys before the manager sees them: every input form
gives the same answers, no output is the caller's list, and changing the caller's list
during a call changes nothing."""

from __future__ import annotations

import sys
import threading

from kvoff import OffloadingManager


class Digest(bytes):
    """A bytes subclass, as a caller's own hash type might be."""


def test_mixed_items_fall_back_and_agree_with_tuples() -> None:
    # Exact bytes, a subclass, small ints, a bool and a 100-bit int: ids must match the same
    # calls made with tuples.
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


def test_short_calls_while_a_long_call_runs_on_another_thread() -> None:
    # Long touches release the GIL while holding the manager's lock; short calls from the
    # other thread wait for it, and every answer stays exact.
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


def test_changing_the_callers_list_during_a_long_call_changes_nothing() -> None:
    # prepare_store of many hashes runs without the GIL; another thread rewrites the list it
    # was given meanwhile. The call's answer is about the list as it was passed.
    n = 20_000
    original = [i.to_bytes(32, "big") for i in range(n)]
    go = threading.Event()

    def scribbler(target: list[bytes]) -> None:
        go.wait()
        for _ in range(100):
            target[:] = [b"other"] * n
            target.reverse()

    old_interval = sys.getswitchinterval()
    # The scribbler wakes at `go` but cannot take the GIL before this thread gives it up,
    # which it does only inside the call, once the hashes are converted.
    sys.setswitchinterval(1.0)
    try:
        for _ in range(3):
            m = OffloadingManager(n)
            hashes = list(original)
            t = threading.Thread(target=scribbler, args=(hashes,))
            t.start()
            go.set()
            out = m.prepare_store(hashes)
            t.join()
            go.clear()
            assert out is not None
            assert out.block_hashes_to_store == original
            assert out.store_spec.block_ids.tolist() == list(range(n))
            assert m.resident == n and all(h in m for h in original[:: n // 100])
    finally:
        sys.setswitchinterval(old_interval)
