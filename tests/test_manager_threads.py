"""Long manager calls release the GIL, and concurrent calls on one manager stay consistent."""

from __future__ import annotations

import bisect
import sys
import threading
import time

from kvoff import OffloadingManager

N = 200_000
MARGIN = 0.002  # seconds: 20 switch intervals (set below) from each end of the call


def test_long_calls_release_the_gil() -> None:
    m = OffloadingManager(N)
    keys = [i.to_bytes(16, "little") for i in range(N)]
    m.prepare_store(keys)
    m.complete_store(keys)

    stop = threading.Event()
    ticks: list[float] = []

    def spin() -> None:
        # Pure Python: it can only run while no other thread holds the GIL.
        while not stop.is_set():
            ticks.append(time.perf_counter())

    old_interval = sys.getswitchinterval()
    # A short switch interval bounds how long the spinner can run at the edges of the call
    # (before the call starts, or while the caller waits to get the GIL back).
    sys.setswitchinterval(1e-4)
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        windows, inside = 0, 0
        for _ in range(10):
            t0 = time.perf_counter()
            m.touch(keys)
            t1 = time.perf_counter()
            if t1 - t0 > 4 * MARGIN:
                windows += 1
                lo, hi = (
                    bisect.bisect_right(ticks, t0 + MARGIN),
                    bisect.bisect_left(ticks, t1 - MARGIN),
                )
                inside += max(0, hi - lo)
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(old_interval)
    assert windows > 0, "every call was too short to tell; raise N"
    # With the GIL held for the whole call, the spinner could record nothing well inside it.
    assert inside > 0
    assert m.lookup(keys) == N


def test_concurrent_calls_on_one_manager_are_serialized() -> None:
    m = OffloadingManager(4 * 3000, policy="arc")
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for batch in range(10):
                keys = [(w, batch, i) for i in range(300)]
                hashes = [hash(k) for k in keys]
                out = m.prepare_store(hashes)
                assert out is not None and len(out.store_spec) == 300
                m.complete_store(hashes)
                assert m.lookup(hashes) == 300
        except BaseException as e:  # surfaced below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (m.resident, m.pinned, m.blocks_stored, m.blocks_hit) == (12_000, 0, 12_000, 12_000)
    assert sorted(
        m.block_id(hash((w, b, i))) for w in range(4) for b in range(10) for i in range(300)
    ) == list(range(12_000))
