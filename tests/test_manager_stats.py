"""The manager reports into a StatsAccumulator (``stats=``): exact interval counts, gauges from
the start, and nothing recorded by a call that fails."""

from __future__ import annotations

import pytest

from kvoff import OffloadingManager, StatsAccumulator, UnknownHashError


def test_manager_counts_reach_the_snapshot() -> None:
    acc = StatsAccumulator()
    m = OffloadingManager(4, block_size=16, stats=acc)
    first = acc.take().reduce()
    assert (first["capacity_blocks"], first["resident_blocks"], first["pinned_blocks"]) == (4, 0, 0)

    out = m.prepare_store([b"a", b"b", b"c"])
    assert out is not None
    assert acc.take().reduce()["pinned_blocks"] == 3  # stores in flight pin their blocks
    m.complete_store([b"a", b"b", b"c"])
    assert m.lookup([b"a", b"b", b"x", b"c"]) == 2
    assert m.prepare_store([b"d", b"e"]) is not None  # evicts one ready block
    assert m.prepare_store([b"f", b"g", b"h", b"i", b"j"]) is None  # more than capacity
    r = acc.take().reduce()
    assert (r["blocks_queried"], r["blocks_hit"]) == (4, 2)
    assert (r["tokens_queried"], r["tokens_hit"]) == (64, 32)
    assert (r["blocks_stored"], r["blocks_evicted"], r["allocation_failures"]) == (2, 1, 1)
    assert (r["capacity_blocks"], r["resident_blocks"], r["pinned_blocks"]) == (4, 4, 2)


def test_failed_call_records_nothing() -> None:
    acc = StatsAccumulator()
    m = OffloadingManager(4, block_size=16, stats=acc)
    acc.take()
    with pytest.raises(UnknownHashError):
        m.prepare_load([b"missing"])
    assert acc.take().reduce()["blocks_queried"] == 0
    assert acc.take().is_empty() is False  # the gauges (capacity 4) are still reported


def test_stats_must_be_an_accumulator() -> None:
    with pytest.raises(TypeError, match="stats"):
        OffloadingManager(4, stats="not an accumulator")  # type: ignore[arg-type]
