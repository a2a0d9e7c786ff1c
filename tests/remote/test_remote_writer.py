"""Write-behind under backpressure: the oldest pending blocks go, counted; enqueue never waits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _redis_proc import RedisServer, wait_until
from _remote_data import BLOCK_BYTES, bhash, block

from kvoff.errors import InvalidArgumentError
from kvoff.remote import HEADER_BYTES, RemoteLayout, RemoteTier

TierFactory = Callable[..., RemoteTier]


@pytest.mark.parametrize("copy", [True, False])
def test_full_queue_drops_the_oldest_pending_writes(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory, copy: bool
) -> None:
    tier = tier_factory(
        redis_server.url + "?timeout=60",
        layout,
        lookup=False,
        fetch=False,
        write_threads=1,
        write_batch_blocks=1,
        max_queue_blocks=4,
        skip_existing=False,
    )
    wb = tier.writer
    assert wb is not None
    blocks = {i: block(i) for i in range(7)}
    redis_server.pause()
    try:
        assert wb.enqueue(bhash(0), blocks[0], copy=copy, token=0)
        # The writer thread holds block 0 in flight, stuck on the stopped server.
        wait_until(lambda: wb.depth == 0, 30, "the writer to take block 0")
        released: list[object] = []
        if not copy:
            # A borrowed block is released once the writer has copied it into its value,
            # before the (stuck) network call.
            wait_until(
                lambda: bool(released.extend(wb.take_released()) or released),
                30,
                "block 0's release",
            )
            assert released == [0]
        for i in range(1, 7):
            assert wb.enqueue(bhash(i), blocks[i], copy=copy, token=i) is True
        # Blocks 1 and 2 were pushed out by 5 and 6; a second enqueue of a queued block is a
        # no-op (its token comes straight back when the block was borrowed).
        assert wb.enqueue(bhash(4), blocks[4], copy=copy, token="dup") is False
        assert wb.depth == 4 and wb.queued_bytes == 4 * (HEADER_BYTES + BLOCK_BYTES)
        totals = tier.stats.totals()
        assert totals["write_behind"]["dropped"] == 2
        assert totals["write_behind"]["enqueued"] == 7
        assert totals["gauges"]["queue_depth"] == 4
        assert totals["gauges"]["queue_bytes"] == 4 * (HEADER_BYTES + BLOCK_BYTES)
        if not copy:
            assert sorted(released + wb.take_released(), key=str) == [0, 1, 2, "dup"]
    finally:
        redis_server.resume()
    assert wb.flush(60)
    keys = {i: tier.keyspace.key(bhash(i)).decode() for i in range(7)}
    present = {i for i in range(7) if redis_server.cli("EXISTS", keys[i]) == "1"}
    assert present == {0, 3, 4, 5, 6}
    wbt = tier.stats.totals()["write_behind"]
    assert (wbt["written"], wbt["dropped"], wbt["failed"]) == (5, 2, 0)
    if not copy:
        assert sorted(wb.take_released()) == [3, 4, 5, 6]


def test_queue_limits_are_checked(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot hold one value of"):
        tier_factory(redis_server.url, layout, max_queue_bytes=BLOCK_BYTES)
    with pytest.raises(InvalidArgumentError, match="must be positive"):
        tier_factory(redis_server.url, layout, max_queue_blocks=0)
    with pytest.raises(InvalidArgumentError, match="ttl_seconds must be positive"):
        tier_factory(redis_server.url, layout, ttl_seconds=0)


def test_closed_writer_refuses_and_releases(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout, lookup=False, fetch=False)
    wb = tier.writer
    assert wb is not None
    tier.close()
    with pytest.raises(InvalidArgumentError, match="the write-behind queue is closed"):
        wb.enqueue(bhash(0), block(0))
    assert wb.depth == 0
