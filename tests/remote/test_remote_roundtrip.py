"""The remote tier against a real redis-server: exact bytes out and back, prefix lookups,
layout isolation, and values that must not be served."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import redis
import torch
from _redis_proc import RedisServer
from _remote_data import BLOCK_BYTES, bhash, block

from kvoff.errors import HashTypeError, InvalidArgumentError, UnknownJobError
from kvoff.remote import HEADER_BYTES, LookupResult, RemoteLayout, RemoteTier

TierFactory = Callable[..., RemoteTier]


def _write(tier: RemoteTier, items: dict[bytes | int, torch.Tensor]) -> None:
    assert tier.writer is not None
    for h, data in items.items():
        assert tier.writer.enqueue(h, data) is True
    assert tier.writer.flush(20), "write-behind did not drain"


def _lookup(tier: RemoteTier, hashes: list[bytes | int]) -> LookupResult:
    assert tier.lookup is not None
    result = tier.lookup.wait(tier.lookup.submit(hashes), 20)
    assert result is not None, "lookup did not complete"
    return result


def _fetch(tier: RemoteTier, items: list[tuple[bytes | int, object]]) -> tuple[bool, ...]:
    assert tier.fetcher is not None
    job = tier.fetcher.submit(items)
    (result,) = tier.fetcher.wait([job], 20)
    return result.ok


def test_blocks_round_trip_exactly(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    data: dict[bytes | int, torch.Tensor] = {bhash(i): block(i) for i in range(5)}
    data[-7] = block(100)  # int hashes work too
    _write(tier, data)
    assert _lookup(tier, [*data, bhash(99)]) == LookupResult(6, True)
    dests = [torch.zeros(BLOCK_BYTES, dtype=torch.uint8) for _ in data]
    assert _fetch(tier, list(zip(data, dests, strict=True))) == (True,) * 6
    for want, got in zip(data.values(), dests, strict=True):
        assert torch.equal(want, got)
    totals = tier.stats.totals()
    w, r = totals["directions"]["CPU_to_REMOTE"], totals["directions"]["REMOTE_to_CPU"]
    assert (w["blocks"], w["bytes"], w["failed_ops"]) == (6, 6 * (BLOCK_BYTES + HEADER_BYTES), 0)
    assert (r["blocks"], r["bytes"], r["failed_ops"]) == (6, 6 * BLOCK_BYTES, 0)
    assert sum(r["size_counts"]) == r["ops"] and sum(w["duration_counts"]) == w["ops"]
    assert totals["write_behind"] == {
        "enqueued": 6, "written": 6, "skipped_existing": 0, "dropped": 0, "failed": 0,
    }  # fmt: skip
    assert totals["lookups"] == {"requests": 1, "blocks_queried": 7, "blocks_hit": 6}
    assert set(totals["errors"].values()) == {0}
    assert totals["gauges"] == {"queue_depth": 0, "queue_bytes": 0, "up": 1}


def test_destinations_of_other_kinds(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(1): block(1)})
    want = block(1).numpy().tobytes()
    buf, arr = bytearray(BLOCK_BYTES), np.zeros(BLOCK_BYTES, dtype=np.uint8)
    # A float16 tensor of the right byte size, as a CPU block of another dtype would be.
    half = torch.zeros(BLOCK_BYTES // 2, dtype=torch.float16)
    assert _fetch(tier, [(bhash(1), buf)]) == (True,)
    assert _fetch(tier, [(bhash(1), arr)]) == (True,)
    assert _fetch(tier, [(bhash(1), half)]) == (True,)
    assert bytes(buf) == arr.tobytes() == half.view(torch.uint8).numpy().tobytes() == want


def test_lookup_counts_the_leading_run_only(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(i): block(i) for i in (0, 1, 2, 4, 5)})
    assert _lookup(tier, [bhash(i) for i in range(6)]) == LookupResult(3, True)
    assert _lookup(tier, [bhash(3), bhash(4)]) == LookupResult(0, True)
    assert _lookup(tier, []) == LookupResult(0, True)
    # Several lookups submitted together all get their own answer.
    assert tier.lookup is not None
    ids = [tier.lookup.submit([bhash(i) for i in range(k)]) for k in range(1, 6)]
    answers = [tier.lookup.wait(i, 20) for i in ids]
    assert [a.hits for a in answers if a is not None] == [1, 2, 3, 3, 3]
    with pytest.raises(UnknownJobError, match=f"unknown or already collected lookup id {ids[0]}"):
        tier.lookup.poll(ids[0])


def test_other_models_and_layouts_never_see_our_blocks(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    ours = tier_factory(redis_server.url, layout)
    _write(ours, {bhash(i): block(i) for i in range(3)})
    for other_layout in (
        dataclasses.replace(layout, model="test/other-model"),
        dataclasses.replace(layout, dtype="float16"),
        dataclasses.replace(layout, tp_size=2, tp_rank=1),
    ):
        other = tier_factory(redis_server.url, other_layout)
        assert _lookup(other, [bhash(0)]) == LookupResult(0, True)
        dest = torch.full((BLOCK_BYTES,), 7, dtype=torch.uint8)
        assert _fetch(other, [(bhash(0), dest)]) == (False,)
        assert bool((dest == 7).all())
        assert other.stats.totals()["fetch"]["blocks_missing"] == 1


def test_tensor_parallel_lookup_needs_every_rank(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tp = dataclasses.replace(layout, tp_size=2)
    rank0 = tier_factory(redis_server.url, tp.for_rank(0), lookup=False)
    rank1 = tier_factory(redis_server.url, tp.for_rank(1), lookup=False)
    _write(rank0, {bhash(i): block(i) for i in range(4)})
    _write(rank1, {bhash(i): block(10 + i) for i in range(2)})
    scheduler = tier_factory(redis_server.url, tp, fetch=False, write=False, lookup_ranks=[0, 1])
    assert _lookup(scheduler, [bhash(i) for i in range(4)]) == LookupResult(2, True)
    # Each rank reads back its own shard.
    d0, d1 = (
        torch.zeros(BLOCK_BYTES, dtype=torch.uint8),
        torch.zeros(BLOCK_BYTES, dtype=torch.uint8),
    )
    assert _fetch(rank0, [(bhash(1), d0)]) == (True,) and torch.equal(d0, block(1))
    assert _fetch(rank1, [(bhash(1), d1)]) == (True,) and torch.equal(d1, block(11))


def test_blocks_already_on_the_server_are_not_sent_again(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    first = tier_factory(redis_server.url, layout)
    second = tier_factory(redis_server.url, layout)
    _write(first, {bhash(i): block(i) for i in range(3)})
    _write(second, {bhash(i): block(i) for i in range(4)})
    wb = second.stats.totals()["write_behind"]
    assert (wb["enqueued"], wb["written"], wb["skipped_existing"]) == (4, 1, 3)
    assert second.stats.totals()["directions"]["CPU_to_REMOTE"]["blocks"] == 1


def test_borrowed_buffers_come_back_as_tokens(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    assert tier.writer is not None
    srcs = [block(i) for i in range(3)]
    for i, src in enumerate(srcs):
        assert tier.writer.enqueue(bhash(i), src, copy=False, token=("cpu", i)) is True
    assert tier.writer.flush(20)
    assert sorted(tier.writer.take_released()) == [("cpu", 0), ("cpu", 1), ("cpu", 2)]
    assert tier.writer.take_released() == []
    # A block that is already on the server is released too, without being sent.
    assert tier.writer.enqueue(bhash(0), srcs[0], copy=False, token="again") is True
    assert tier.writer.flush(20)
    assert tier.writer.take_released() == ["again"]
    dest = torch.zeros(BLOCK_BYTES, dtype=torch.uint8)
    assert _fetch(tier, [(bhash(2), dest)]) == (True,) and torch.equal(dest, srcs[2])


def test_copy_at_enqueue_detaches_from_the_caller(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    assert tier.writer is not None
    src = block(3)
    want = src.clone()
    redis_server.pause()  # nothing is sent before the caller scribbles over its memory
    try:
        assert tier.writer.enqueue(bhash(3), src) is True
        src.fill_(0)
    finally:
        redis_server.resume()
    assert tier.writer.flush(20)
    dest = torch.zeros(BLOCK_BYTES, dtype=torch.uint8)
    assert _fetch(tier, [(bhash(3), dest)]) == (True,) and torch.equal(dest, want)


def test_bad_input_raises_and_changes_nothing(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    assert tier.writer is not None and tier.fetcher is not None
    with pytest.raises(InvalidArgumentError, match=f"must be {BLOCK_BYTES} bytes, got 10"):
        tier.writer.enqueue(bhash(0), b"x" * 10)
    with pytest.raises(InvalidArgumentError, match="a CPU tensor or a bytes-like buffer, got list"):
        tier.writer.enqueue(bhash(0), [1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="must be a contiguous tensor"):
        tier.writer.enqueue(bhash(0), torch.zeros(2, BLOCK_BYTES, dtype=torch.uint8)[:, 0])
    with pytest.raises(HashTypeError, match="got float"):
        tier.writer.enqueue(1.5, block(0))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="a fetch destination must be writable"):
        tier.fetcher.submit([(bhash(0), bytes(BLOCK_BYTES))])
    with pytest.raises(InvalidArgumentError, match="names the same block twice"):
        tier.fetcher.submit(
            [(bhash(0), bytearray(BLOCK_BYTES)), (bhash(0), bytearray(BLOCK_BYTES))]
        )
    ok = bytearray(BLOCK_BYTES)
    with pytest.raises(InvalidArgumentError, match=f"must be {BLOCK_BYTES} bytes, got 3"):
        tier.fetcher.submit([(bhash(0), ok), (bhash(1), bytearray(3))])
    assert tier.writer.depth == 0 and tier.fetcher.num_in_flight == 0
    assert tier.fetcher.get_finished() == []
    assert tier.stats.totals()["write_behind"]["enqueued"] == 0
    assert redis_server.cli("DBSIZE") == "0"
    # The tier still works after every refusal.
    _write(tier, {bhash(0): block(0)})
    assert _fetch(tier, [(bhash(0), ok)]) == (True,) and bytes(ok) == block(0).numpy().tobytes()


def test_torn_foreign_truncated_and_corrupt_values_are_misses(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(i): block(i) for i in range(6)})
    raw = redis.Redis(port=redis_server.port)
    key = tier.keyspace.key
    good = raw.get(key(bhash(0)))
    assert good is not None and len(good) == HEADER_BYTES + BLOCK_BYTES
    corrupt = bytearray(good)
    corrupt[-1] ^= 0x40
    raw.set(key(bhash(0)), bytes(corrupt))  # one bit flipped in the payload
    torn = raw.get(key(bhash(1)))
    assert torn is not None
    raw.set(key(bhash(1)), torn[: HEADER_BYTES + 1000])  # torn: the tail never arrived
    raw.set(key(bhash(2)), b"someone else's value")  # foreign: not ours at all
    raw.set(key(bhash(3)), good)  # foreign: a real value under another block's key
    raw.set(key(bhash(4)), good[:30])  # cut inside the header
    dests = [torch.full((BLOCK_BYTES,), 9, dtype=torch.uint8) for _ in range(6)]
    ok = _fetch(tier, [(bhash(i), dests[i]) for i in range(6)])
    assert ok == (False, False, False, False, False, True)
    for d in dests[:5]:
        assert bool((d == 9).all()), "a rejected value reached its destination"
    assert torch.equal(dests[5], block(5))
    errors = tier.stats.totals()["errors"]
    assert (errors["corrupt"], errors["truncated"], errors["foreign"]) == (1, 2, 2)
    assert tier.stats.totals()["directions"]["REMOTE_to_CPU"]["blocks"] == 1
    raw.close()


def test_ttl_expires_blocks(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout, ttl_seconds=3600)
    _write(tier, {bhash(0): block(0)})
    ttl = int(redis_server.cli("PTTL", tier.keyspace.key(bhash(0)).decode()))
    assert 3_590_000 < ttl <= 3_600_000


def test_stats_take_is_an_interval(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(0): block(0)})
    first = tier.stats.take()
    assert first["write_behind"]["written"] == 1
    _write(tier, {bhash(1): block(1), bhash(2): block(2)})
    second = tier.stats.take()
    assert second["write_behind"]["written"] == 2
    assert second["directions"]["CPU_to_REMOTE"]["blocks"] == 2
    assert second["gauges"]["up"] == 1
    assert tier.stats.take()["write_behind"]["written"] == 0
    assert tier.stats.totals()["write_behind"]["written"] == 3


def test_tier_refuses_to_pickle_and_shows_no_secrets(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    import pickle

    tier = tier_factory(redis_server.url, layout, lookup=False, fetch=False)
    assert repr(tier) == f"RemoteTier('{redis_server.url}', new, parts=['writer'])"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(tier)


def test_a_key_of_another_type_is_a_server_error_and_a_miss(
    redis_server: RedisServer, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    tier = tier_factory(redis_server.url, layout)
    _write(tier, {bhash(1): block(1)})
    redis_server.cli("HSET", tier.keyspace.key(bhash(0)).decode(), "f", "v")
    dests = [torch.full((BLOCK_BYTES,), 3, dtype=torch.uint8) for _ in range(2)]
    assert _fetch(tier, [(bhash(0), dests[0]), (bhash(1), dests[1])]) == (False, True)
    assert bool((dests[0] == 3).all()) and torch.equal(dests[1], block(1))
    totals = tier.stats.totals()
    assert totals["errors"]["server"] == 1
    # The server refused one command, it is not gone: the link stays up.
    assert totals["gauges"]["up"] == 1 and totals["link"]["disconnects"] == 0
