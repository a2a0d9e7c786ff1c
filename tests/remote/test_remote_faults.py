"""Faults against a real redis-server: down at start, killed and restarted, stopped (slow),
evicting our keys, out of memory, wrong password. In each the tier answers (misses and
failures), serves nothing wrong, comes back, and its counters say what happened."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from _redis_proc import RedisServer, wait_until
from _remote_data import BLOCK_BYTES, bhash, block

from kvoff.remote import LookupResult, RemoteLayout, RemoteTier

TierFactory = Callable[..., RemoteTier]
ServerFactory = Callable[..., RedisServer]


def _lookup(tier: RemoteTier, hashes: list[bytes]) -> LookupResult:
    assert tier.lookup is not None
    result = tier.lookup.wait(tier.lookup.submit(hashes), 30)
    assert result is not None, "lookup did not complete"
    return result


def _fetch(tier: RemoteTier, items: list[tuple[bytes, torch.Tensor]]) -> tuple[bool, ...]:
    assert tier.fetcher is not None
    job = tier.fetcher.submit(items)
    (result,) = tier.fetcher.wait([job], 30)
    return result.ok


def _write(tier: RemoteTier, items: dict[bytes, torch.Tensor]) -> None:
    assert tier.writer is not None
    for h, data in items.items():
        tier.writer.enqueue(h, data)
    assert tier.writer.flush(30), "write-behind did not drain"


def _wait_up(tier: RemoteTier) -> None:
    wait_until(lambda: _lookup(tier, [bhash(0)]).ok, 30, "the tier to answer again")


def _write_accounting_holds(tier: RemoteTier) -> None:
    wb = tier.stats.totals()["write_behind"]
    assert tier.writer is not None
    assert wb["enqueued"] == (
        wb["written"] + wb["skipped_existing"] + wb["dropped"] + wb["failed"] + tier.writer.depth
    ), wb


def _zeros() -> torch.Tensor:
    return torch.zeros(BLOCK_BYTES, dtype=torch.uint8)


def test_server_down_at_start_then_started(
    server_factory: ServerFactory, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    server = server_factory(start=False)
    tier = tier_factory(server.url, layout)
    assert _lookup(tier, [bhash(0)]) == LookupResult(0, False)
    dest = torch.full((BLOCK_BYTES,), 5, dtype=torch.uint8)
    assert _fetch(tier, [(bhash(0), dest)]) == (False,)
    assert bool((dest == 5).all())
    assert tier.writer is not None and tier.writer.enqueue(bhash(0), block(0)) is True
    totals = tier.stats.totals()
    assert totals["errors"]["connection"] >= 1 and totals["gauges"]["up"] == 0
    assert tier.link.state == "down"
    server.start()
    _wait_up(tier)
    _write(tier, {bhash(1): block(1)})
    dest = _zeros()
    assert _fetch(tier, [(bhash(1), dest)]) == (True,) and torch.equal(dest, block(1))
    totals = tier.stats.totals()
    assert totals["link"] == {"disconnects": 0, "reconnects": 1}
    assert totals["gauges"]["up"] == 1
    _write_accounting_holds(tier)


def test_backoff_spares_a_dead_server(
    server_factory: ServerFactory, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    server = server_factory(start=False)
    tier = tier_factory(server.url, layout, write=False, backoff_initial=60, backoff_max=60)
    assert _lookup(tier, [bhash(0)]) == LookupResult(0, False)
    assert tier.link.retry_in() > 0
    # While backing off nothing is sent: answers come at once and no new error is counted.
    for _ in range(20):
        assert _lookup(tier, [bhash(0)]) == LookupResult(0, False)
        assert _fetch(tier, [(bhash(0), _zeros())]) == (False,)
    assert tier.stats.totals()["errors"]["connection"] == 1


def test_server_killed_mid_run_and_restarted(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(i): block(i) for i in range(3)})
    assert _lookup(tier, [bhash(i) for i in range(3)]) == LookupResult(3, True)
    redis_server.kill()
    wait_until(lambda: not _lookup(tier, [bhash(0)]).ok, 30, "the tier to notice")
    dest = torch.full((BLOCK_BYTES,), 5, dtype=torch.uint8)
    assert _fetch(tier, [(bhash(0), dest)]) == (False,) and bool((dest == 5).all())
    assert tier.stats.totals()["link"]["disconnects"] == 1
    assert tier.stats.totals()["gauges"]["up"] == 0
    redis_server.start()  # same port, empty: nothing was persisted
    _wait_up(tier)
    assert _lookup(tier, [bhash(0)]) == LookupResult(0, True)
    _write(tier, {bhash(7): block(7)})
    dest = _zeros()
    assert _fetch(tier, [(bhash(7), dest)]) == (True,) and torch.equal(dest, block(7))
    totals = tier.stats.totals()
    assert totals["link"] == {"disconnects": 1, "reconnects": 1}
    assert totals["errors"]["connection"] >= 1
    _write_accounting_holds(tier)


def test_stopped_server_times_out_without_blocking_the_caller(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url + "?timeout=4", layout)
    assert tier.lookup is not None and tier.fetcher is not None and tier.writer is not None
    _write(tier, {bhash(0): block(0)})
    redis_server.pause()
    try:
        # The server cannot answer for 4 s, so any call that waited for it could not return
        # "pending" here: submit and poll hand back at once.
        lid = tier.lookup.submit([bhash(0)])
        assert tier.lookup.poll(lid) is None
        job = tier.fetcher.submit([(bhash(0), _zeros())])
        assert tier.fetcher.get_finished() == []
        assert tier.writer.enqueue(bhash(1), block(1)) is True
        assert tier.lookup.wait(lid, 30) == LookupResult(0, False)
        (fetched,) = tier.fetcher.wait([job], 30)
        assert fetched.ok == (False,)
    finally:
        redis_server.resume()
    assert tier.stats.totals()["errors"]["timeout"] >= 1
    _wait_up(tier)
    dest = _zeros()
    assert _fetch(tier, [(bhash(0), dest)]) == (True,) and torch.equal(dest, block(0))
    assert tier.stats.totals()["link"]["reconnects"] == 1


def test_keys_evicted_by_the_server_are_misses(
    server_factory: ServerFactory, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    server = server_factory({"maxmemory": "3mb", "maxmemory-policy": "allkeys-lru"})
    tier = tier_factory(server.url, layout, write_batch_blocks=1)
    n = 24  # 24 x 256 KiB = 6 MiB, twice what the server may hold
    _write(tier, {bhash(i): block(i) for i in range(n)})
    evicted = int(
        next(
            line.split(":")[1]
            for line in server.cli("INFO", "stats").splitlines()
            if line.startswith("evicted_keys:")
        )
    )
    assert evicted > 0, "the server evicted nothing; the test proves nothing"
    hits = _lookup(tier, [bhash(i) for i in range(n)]).hits
    assert hits < n
    dests = [_zeros() for _ in range(n)]
    ok = _fetch(tier, [(bhash(i), dests[i]) for i in range(n)])
    assert 0 < sum(ok) < n
    for i in range(n):
        if ok[i]:
            assert torch.equal(dests[i], block(i))
        else:
            assert bool((dests[i] == 0).all())
    totals = tier.stats.totals()
    assert totals["fetch"]["blocks_missing"] == n - sum(ok)
    assert set(totals["errors"].values()) == {0}


def test_a_block_evicted_between_lookup_and_fetch(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(0): block(0), bhash(1): block(1)})
    assert _lookup(tier, [bhash(0), bhash(1)]) == LookupResult(2, True)
    assert redis_server.cli("DEL", tier.keyspace.key(bhash(0)).decode()) == "1"
    dests = [_zeros(), _zeros()]
    assert _fetch(tier, [(bhash(0), dests[0]), (bhash(1), dests[1])]) == (False, True)
    assert bool((dests[0] == 0).all()) and torch.equal(dests[1], block(1))
    assert tier.stats.totals()["fetch"]["blocks_missing"] == 1


def test_out_of_memory_server_refuses_writes(
    server_factory: ServerFactory, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    server = server_factory({"maxmemory": "2mb", "maxmemory-policy": "noeviction"})
    tier = tier_factory(server.url, layout, write_batch_blocks=1, write_threads=1)
    _write(tier, {bhash(i): block(i) for i in range(16)})
    totals = tier.stats.totals()
    wb = totals["write_behind"]
    assert wb["failed"] > 0 and wb["written"] > 0
    assert totals["errors"]["oom"] == wb["failed"]
    assert totals["directions"]["CPU_to_REMOTE"]["failed_ops"] == wb["failed"]
    # Out of memory is the server refusing, not the server gone: the tier stays up.
    assert totals["gauges"]["up"] == 1 and totals["link"]["disconnects"] == 0
    assert _lookup(tier, [bhash(0)]) == LookupResult(1, True)
    _write_accounting_holds(tier)


def test_wrong_password_never_shows(
    server_factory: ServerFactory,
    layout: RemoteLayout,
    tier_factory: TierFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    right, wrong = "Right-Pass-4e1d", "Wrong-Pass-93ab"
    server = server_factory({"requirepass": right})
    caplog.set_level(logging.DEBUG, logger="kvoff.remote")
    bad = tier_factory(f"redis://:{wrong}@127.0.0.1:{server.port}/0", layout)
    assert _lookup(bad, [bhash(0)]) == LookupResult(0, False)
    assert bad.writer is not None and bad.writer.enqueue(bhash(0), block(0))
    assert _fetch(bad, [(bhash(0), _zeros())]) == (False,)
    assert bad.stats.totals()["errors"]["auth"] >= 1
    assert bad.link.last_error is not None and bad.link.last_error.startswith("auth:")
    anonymous = tier_factory(server.url, layout, fetch=False, write=False)
    assert _lookup(anonymous, [bhash(0)]) == LookupResult(0, False)
    assert anonymous.stats.totals()["errors"]["auth"] >= 1
    good = tier_factory(f"redis://:{right}@127.0.0.1:{server.port}/0", layout)
    _write(good, {bhash(1): block(1)})
    assert _lookup(good, [bhash(1)]) == LookupResult(1, True)
    shown = [
        caplog.text,
        *(repr(t) for t in (bad, good)),
        *(repr(t.link) for t in (bad, good)),
        *(repr(t.config) for t in (bad, good)),
        *(str(t.stats.totals()) for t in (bad, good)),
        str(bad.link.last_error),
    ]
    assert "auth:" in caplog.text  # the failures were logged, and the check below means something
    for text in shown:
        assert wrong not in text and right not in text
    assert "redis://:***@127.0.0.1" in repr(bad)
