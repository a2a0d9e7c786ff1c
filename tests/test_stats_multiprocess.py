"""Snapshots from separate processes (simulated tensor-parallel workers), sent as pickled bytes,
aggregate to the exact totals."""

from __future__ import annotations

import multiprocessing
import pickle
import random

from _stats_model import DIRECTIONS, Transfer, add_transfer, empty_dict
from kvoff import OffloadingConnectorStats, StatsAccumulator


def plan(rank: int) -> list[Transfer]:
    rng = random.Random(1000 + rank)
    return [
        Transfer(
            rng.choice(DIRECTIONS),
            rng.randrange(0, 3 * 10**9),
            rng.randrange(0, 3 * 10**10),
            success=rng.random() > 0.2,
            num_blocks=rng.randrange(1, 128),
        )
        for _ in range(2_000)
    ]


def worker(rank: int, out: multiprocessing.Queue[bytes]) -> None:
    acc = StatsAccumulator()
    # Two intervals per worker, sent separately, as a worker would each step.
    for i, t in enumerate(plan(rank)):
        acc.record_transfer(t.direction, t.num_bytes, t.seconds, t.success, t.num_blocks)
        if i == 700:
            out.put(pickle.dumps(acc.take()))
    acc.record_lookup(10 * (rank + 1), rank + 1, 160 * (rank + 1), 16 * (rank + 1))
    acc.set_occupancy(rank, rank, rank)
    out.put(pickle.dumps(acc.take()))


def test_workers_in_separate_processes_aggregate_exactly() -> None:
    ranks = 4
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[bytes] = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, queue)) for r in range(ranks)]
    for p in procs:
        p.start()
    blobs = [queue.get(timeout=60) for _ in range(2 * ranks)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    total = OffloadingConnectorStats()
    for blob in blobs:
        snapshot = pickle.loads(blob)
        assert isinstance(snapshot, OffloadingConnectorStats)
        total.aggregate(snapshot)

    expected = empty_dict()
    for r in range(ranks):
        for t in plan(r):
            add_transfer(expected, t)
    expected["lookups"] = {
        "blocks_queried": 10 * 10,
        "blocks_hit": 10,
        "tokens_queried": 160 * 10,
        "tokens_hit": 16 * 10,
    }
    # Gauges are summed.
    expected["manager"].update(capacity_blocks=6, resident_blocks=6, pinned_blocks=0 + 1 + 2 + 3)
    assert total.to_dict() == expected
