"""The remote tier wired into the connector: two engines (scheduler + workers on CPU tensors,
small CPU tiers) share one real redis-server. The second serves the first's blocks from the
remote tier, every loaded byte exact; a corrupt value, a server killed mid-fetch or one that
stops answering never serves a wrong byte and never holds a step on the network."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import torch
from _redis_proc import RedisServer

from _connector_rig import A_HASHES, A_IDS, B_HASHES, B_IDS, Rig
from kvoff import InvalidArgumentError, InvalidStateError, JobTracker
from kvoff.connector import (
    OffloadingScheduler,
    OffloadingWorker,
    RemoteFetchSpec,
    RequestStep,
    StepMetadata,
    TierHits,
    WorkerOutput,
)
from kvoff.remote import RemoteLayout, RemoteTier
from kvoff.remote.codec import HEADER_BYTES

WAIT = {"remote_max_wait_steps": 10**6}  # a loaded test machine: wait as long as it takes
C_IDS = list(range(22, 32))
E_HASHES = [*A_HASHES, 300, 301, 302, 303]  # A's 32 tokens, then 16 more A never stored
E_IDS = list(range(22, 34))


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for r in made:
        r.close()


def _rig(rigs: list[Rig], url: str, tp: int = 1, **kw: Any) -> Rig:
    kw.setdefault("sched_kw", WAIT)
    rig = Rig(tp, remote=url, **kw)
    rigs.append(rig)
    return rig


def settle(rig: Rig, req: str, hashes: list[int], ids: list[int], tokens: int) -> tuple[int, int]:
    """Admit ``req`` as an engine does: while the scheduler says "ask again next step", run a
    step (the workers' background results flow back) and ask again. Returns (matched, steps
    the request was held)."""
    for held in range(2000):
        matched = rig.sched.get_num_new_matched_tokens(req, hashes, tokens, 0)
        if matched is not None:
            rig.sched.update_state_after_alloc(req, hashes, ids, 0, matched)
            return matched, held
        rig.run_step([])
        time.sleep(0.005)
    raise AssertionError(f"request {req!r} still held after 2000 steps")


def drain_writes(rig: Rig) -> None:
    """One step issues the writes the last stores queued, the workers' write-behind queues
    drain, and one more step hands the pins back."""
    rig.run_step([])
    for tier in rig.remote_tiers[1:]:
        assert tier.writer.flush(30)
    rig.run_step([])
    assert rig.sched.remote is not None and rig.sched.remote.num_write_pins == 0
    assert rig.manager.pinned == 0
    assert rig.sched.num_transfers_in_flight == 0


def store_a(rig: Rig) -> None:
    assert settle(rig, "A", A_HASHES, A_IDS, 33)[0] == 0  # the remote tier is empty too
    rig.run_step([RequestStep("A", A_HASHES, A_IDS, 33)], finished=["A"])
    assert rig.manager.lookup([101, 103, 105, 107]) == 4


def assert_loaded_from(dst: Rig, dst_ids: list[int], src: Rig, src_ids: list[int]) -> None:
    for rank in range(len(dst.workers)):
        for d, s in zip(dst_ids, src_ids, strict=True):
            for x, y in zip(dst.block(rank, d), src.block(rank, s), strict=True):
                assert torch.equal(x.view(torch.int16), y.view(torch.int16)), (rank, d, s)


def assert_zero(rig: Rig, ids: list[int]) -> None:
    for rank in range(len(rig.workers)):
        for i in ids:
            assert all(not t.view(torch.int16).any() for t in rig.block(rank, i)), (rank, i)


def worker_totals(rig: Rig) -> list[dict[str, Any]]:
    return [t.stats.totals() for t in rig.remote_tiers[1:]]


@pytest.mark.parametrize("tp", [1, 2])
def test_a_second_engine_serves_the_first_engines_blocks_from_the_remote_tier(
    redis_server: RedisServer, rigs: list[Rig], tp: int
) -> None:
    a = _rig(rigs, redis_server.url, tp, kv_seed=0)
    b = _rig(rigs, redis_server.url, tp, kv_seed=None)  # computed nothing: all zeros
    store_a(a)
    # Pinned (a read pin) until every rank's writer has read them.
    assert [a.manager.block_state(h) for h in (101, 103, 105, 107)] == [1] * 4
    drain_writes(a)
    assert [a.manager.block_state(h) for h in (101, 103, 105, 107)] == [0] * 4
    assert [w["write_behind"]["written"] for w in worker_totals(a)] == [4] * tp
    assert a.sched.remote is not None and a.sched.remote.writes_offered == 4

    matched, held = settle(b, "B", B_HASHES, B_IDS, 40)
    assert matched == 32
    assert held >= 2  # one step or more for the lookup, one or more for the fetch
    assert b.sched.remote is not None and b.sched.remote.fetched_blocks == 4
    assert [w["directions"]["REMOTE_to_CPU"]["blocks"] for w in worker_totals(b)] == [4] * tp
    b.run_step([])  # the usual CPU-to-GPU load
    assert b.sched.take_finished_loading() == ["B"]
    assert_loaded_from(b, B_IDS[:8], a, A_IDS[:8])
    assert_zero(b, B_IDS[8:])
    assert b.sched.tier_hits() == TierHits(0, 4, 0, 32)
    assert a.sched.tier_hits() == TierHits()
    assert b.manager.pinned == 0

    # Now in B's CPU tier: another request there is a CPU hit, without asking Redis.
    lookups = b.remote_tiers[0].stats.totals()["lookups"]["requests"]
    assert settle(b, "C", B_HASHES, C_IDS, 40) == (32, 0)
    b.run_step([])
    assert_loaded_from(b, C_IDS[:8], a, A_IDS[:8])
    assert b.sched.take_tier_hits() == TierHits(4, 4, 32, 32)
    assert b.sched.take_tier_hits() == TierHits()
    assert b.remote_tiers[0].stats.totals()["lookups"]["requests"] == lookups
    # Fetched blocks are not written back: only stores go out.
    assert sum(w["write_behind"]["enqueued"] for w in worker_totals(b)) == 0


def test_a_corrupt_value_is_a_miss_and_the_prefix_stops_there(
    redis_server: RedisServer, rigs: list[Rig]
) -> None:
    a = _rig(rigs, redis_server.url, kv_seed=0)
    b = _rig(rigs, redis_server.url, kv_seed=None)
    store_a(a)
    drain_writes(a)
    key = b.remote_tiers[1].keyspace.key(105)
    client = redis.Redis(port=redis_server.port)
    value = bytearray(client.get(key))
    value[-1] ^= 0x01  # one payload bit: the checksum catches it
    client.set(key, bytes(value))
    client.close()

    assert settle(b, "B", B_HASHES, B_IDS, 40)[0] == 16  # 101, 103; 105 was refused
    b.run_step([])
    assert_loaded_from(b, B_IDS[:4], a, A_IDS[:4])
    assert_zero(b, B_IDS[4:])
    assert worker_totals(b)[0]["errors"]["corrupt"] == 1
    assert 105 not in b.manager
    assert b.manager.block_state(107) == 0  # good, kept, but never served out of order
    assert b.sched.remote is not None
    assert (b.sched.remote.fetched_blocks, b.sched.remote.failed_fetch_blocks) == (3, 1)
    assert b.sched.tier_hits() == TierHits(0, 2, 0, 16)


def test_redis_killed_mid_fetch_serves_nothing_wrong_and_the_cpu_tier_goes_on(
    redis_server: RedisServer, rigs: list[Rig]
) -> None:
    a = _rig(rigs, redis_server.url, kv_seed=0)
    b = _rig(rigs, redis_server.url, kv_seed=7)
    store_a(a)
    drain_writes(a)
    assert b.sched.remote is not None
    for _ in range(2000):  # until the lookup was answered and the fetch is queued
        assert b.sched.get_num_new_matched_tokens("B", B_HASHES, 40, 0) is None
        if b.sched.remote.num_fetches_in_flight:
            break
        time.sleep(0.005)
    assert b.sched.remote.num_fetches_in_flight == 1
    assert [b.manager.block_state(h) for h in (101, 103, 105, 107)] == [-1] * 4
    redis_server.kill()
    before = [b.block(0, i) for i in B_IDS]

    assert settle(b, "B", B_HASHES, B_IDS, 40)[0] == 0  # the fetch failed: computed instead
    assert (b.sched.remote.fetched_blocks, b.sched.remote.failed_fetch_blocks) == (0, 4)
    assert all(h not in b.manager for h in (101, 103, 105, 107))
    assert worker_totals(b)[0]["errors"]["connection"] == 1
    for x, y in zip([b.block(0, i) for i in B_IDS], before, strict=True):
        assert all(
            torch.equal(p.view(torch.int16), q.view(torch.int16)) for p, q in zip(x, y, strict=True)
        )

    # B stores its own blocks and serves them from its CPU tier, Redis still gone.
    b.run_step([RequestStep("B", B_HASHES, B_IDS, 40)], finished=["B"])
    drain_writes(b)
    assert settle(b, "C", B_HASHES, C_IDS, 40)[0] == 32
    b.run_step([])
    assert_loaded_from(b, C_IDS[:8], b, B_IDS[:8])
    assert b.sched.tier_hits() == TierHits(4, 0, 32, 0)
    # Engine A, whose tier never saw the failure, also keeps serving from its CPU tier.
    assert settle(a, "B", B_HASHES, B_IDS, 40)[0] == 32
    a.run_step([])
    assert_loaded_from(a, B_IDS[:8], a, A_IDS[:8])
    assert a.manager.pinned == 0


def test_a_server_that_stops_answering_holds_a_request_only_max_wait_steps(
    redis_server: RedisServer, rigs: list[Rig]
) -> None:
    # A 30 s socket timeout: the lookup cannot fail over during the test, only go unanswered.
    a = _rig(
        rigs, redis_server.url + "?timeout=30", kv_seed=0, sched_kw={"remote_max_wait_steps": 3}
    )
    store_a(a)
    drain_writes(a)
    # On a loaded machine A's own lookup (an empty tier) may already have run out of its
    # three steps: count only what the pause causes.
    assert a.sched.remote is not None
    timeouts_before = a.sched.remote.lookup_timeouts
    redis_server.pause()
    try:
        answers = [a.sched.get_num_new_matched_tokens("E", E_HASHES, 49, 0) for _ in range(5)]
        # Asked (held), three more steps unanswered (held), then on with the 4 CPU hits.
        assert answers == [None, None, None, None, 32]
        assert a.sched.remote.lookup_timeouts == timeouts_before + 1
        a.sched.update_state_after_alloc("E", E_HASHES, E_IDS, 0, 32)
        a.run_step([])
        assert_loaded_from(a, E_IDS[:8], a, A_IDS[:8])
        assert a.sched.tier_hits() == TierHits(4, 0, 32, 0)
    finally:
        redis_server.resume()


def test_redis_down_at_start_costs_no_step(server_factory: Any, rigs: list[Rig]) -> None:
    dead = server_factory(start=False)
    backoff = {"backoff_initial": 60.0, "backoff_max": 60.0}  # stays down for the test
    a = _rig(rigs, dead.url, kv_seed=0, remote_kw=backoff)
    store_a(a)  # the first lookup finds the server down: answered as a miss
    assert a.sched.remote is not None
    assert a.remote_tiers[0].stats.totals()["errors"]["connection"] == 1
    assert not a.remote_tiers[0].link.available()
    # With the link known down, stores are not offered to it (no CPU block pinned for it)...
    assert (a.sched.remote.writes_offered, a.sched.remote.writes_skipped) == (0, 4)
    assert a.manager.pinned == 0
    # ... and a CPU-tier miss is not held at all: the 4 CPU hits are served at once.
    assert a.sched.get_num_new_matched_tokens("E", E_HASHES, 49, 0) == 32
    a.sched.update_state_after_alloc("E", E_HASHES, E_IDS, 0, 32)
    a.run_step([])
    assert_loaded_from(a, E_IDS[:8], a, A_IDS[:8])
    assert a.remote_tiers[0].stats.totals()["lookups"]["requests"] == 0


def test_reports_that_cannot_be_honest_are_refused_with_nothing_applied(
    redis_server: RedisServer, rigs: list[Rig]
) -> None:
    a = _rig(rigs, redis_server.url, kv_seed=0)
    store_a(a)
    assert a.sched.remote is not None and a.sched.remote.num_write_pins == 4
    with pytest.raises(InvalidStateError, match=r"unknown remote fetch ids \[99\]"):
        a.sched.update_from_output(WorkerOutput(remote_fetches=[(99, (True,))]))
    refused = r"rank 0 released remote writes it does not hold \(\[5\]\)"
    with pytest.raises(InvalidStateError, match=refused):
        a.sched.update_from_output(WorkerOutput(remote_released=[101, 5]))
    assert a.sched.remote.num_write_pins == 4  # 101 was not unpinned by the refused output
    drain_writes(a)
    plain = Rig()
    with pytest.raises(InvalidStateError, match="this scheduler has no remote tier"):
        plain.sched.update_from_output(WorkerOutput(remote_released=[101]))


def test_mismatched_layouts_are_refused(redis_server: RedisServer) -> None:
    rig = Rig()
    nbytes = rig.transfers[0].cpu_block_bytes
    layout = RemoteLayout(
        model="m", dtype="bfloat16", layout="kv_split", block_bytes=nbytes,
        cpu_block_size=8, gpu_block_size=4, tp_size=2,
    )  # fmt: skip
    with (
        RemoteTier.for_scheduler(redis_server.url, layout) as tier,
        pytest.raises(InvalidArgumentError, match=r"tp_size=2; this scheduler has 4, 8"),
    ):
        OffloadingScheduler(rig.manager, 4, 8, remote=tier)
    with (
        RemoteTier.for_worker(redis_server.url, layout, rank=1) as tier,
        pytest.raises(InvalidArgumentError, match=r"tp_rank=1; this worker has .* rank=0"),
    ):
        OffloadingWorker(rig.transfers[0], JobTracker(), rank=0, remote=tier)
    with pytest.raises(InvalidStateError, match="this worker has no remote tier"):
        rig.worker.start_loads(
            StepMetadata(remote_fetches=[RemoteFetchSpec(0, "A", [101], np.array([0]))])
        )


# -- the connector's stats accumulator carries the remote tier --------------------------------


def scrape(snap: Any) -> dict[str, float]:
    """One engine's snapshot observed by an exporter, scraped: series line -> value."""
    from prometheus_client import CollectorRegistry, generate_latest

    from kvoff.metrics import OffloadPromMetrics

    reg = CollectorRegistry()
    OffloadPromMetrics(reg).observe(snap)
    lines = generate_latest(reg).decode().splitlines()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in lines if ln[:1] != "#")}


@pytest.mark.parametrize("tp", [1, 2])
def test_the_second_engines_snapshot_counts_what_redis_served_it(
    redis_server: RedisServer, rigs: list[Rig], tp: int
) -> None:
    a = _rig(rigs, redis_server.url, tp, kv_seed=0)
    b = _rig(rigs, redis_server.url, tp, kv_seed=None)
    store_a(a)
    drain_writes(a)
    nbytes = a.transfers[0].cpu_block_bytes
    wrote = a.stats.take().to_dict()
    # Every rank wrote its shard of the 4 blocks (a write counts the value, header included):
    # forwarded from each worker's RemoteStats.
    written = wrote["transfers"]["CPU_to_REMOTE"]
    assert (written["blocks"], written["bytes"]) == (4 * tp, 4 * tp * (nbytes + HEADER_BYTES))
    assert written["ops"] == sum(w["directions"]["CPU_to_REMOTE"]["ops"] for w in worker_totals(a))
    assert wrote["hits"] == {
        "cpu": {"blocks": 0, "tokens": 0},
        "remote": {"blocks": 0, "tokens": 0},
    }

    assert settle(b, "B", B_HASHES, B_IDS, 40)[0] == 32
    b.run_step([])
    assert b.sched.take_finished_loading() == ["B"]
    snap = b.stats.take()
    got = snap.to_dict()
    assert got["hits"] == {"cpu": {"blocks": 0, "tokens": 0}, "remote": {"blocks": 4, "tokens": 32}}
    fetched = got["transfers"]["REMOTE_to_CPU"]
    ops = [w["directions"]["REMOTE_to_CPU"]["ops"] for w in worker_totals(b)]
    assert (fetched["ops"], fetched["blocks"], fetched["bytes"]) == (
        sum(ops),
        4 * tp,
        4 * tp * nbytes,
    )
    assert min(ops) >= 1 and fetched["failed_ops"] == 0
    # The scheduler's lookups (forwarded from its tier's RemoteStats): A's 4 blocks found.
    sched_lookups = b.remote_tiers[0].stats.totals()["lookups"]
    assert got["remote"]["lookups"] == {
        "blocks_queried": sched_lookups["blocks_queried"],
        "blocks_hit": sched_lookups["blocks_hit"],
    }
    assert got["remote"]["lookups"]["blocks_hit"] == 4
    assert got["remote"]["errors"] == dict.fromkeys(got["remote"]["errors"], 0)
    series = scrape(snap)
    assert series['kvoff_hit_blocks_total{engine="0",tier="remote"}'] == 4.0
    assert series['kvoff_hit_blocks_total{engine="0",tier="cpu"}'] == 0.0

    # A second request over the same prefix is a CPU hit now, in the next interval.
    assert settle(b, "C", B_HASHES, C_IDS, 40) == (32, 0)
    again = b.stats.take().to_dict()
    assert again["hits"] == {
        "cpu": {"blocks": 4, "tokens": 32},
        "remote": {"blocks": 0, "tokens": 0},
    }
    assert again["transfers"]["REMOTE_to_CPU"]["ops"] == 0


def test_a_dead_server_shows_as_connection_errors_in_the_snapshot(
    server_factory: Any, rigs: list[Rig]
) -> None:
    dead = server_factory(start=False)
    a = _rig(rigs, dead.url, kv_seed=0, remote_kw={"backoff_initial": 60.0, "backoff_max": 60.0})
    store_a(a)
    snap = a.stats.take()
    assert snap.to_dict()["remote"]["errors"]["connection"] == 1
    assert a.remote_tiers[0].stats.totals()["errors"]["connection"] == 1
    assert scrape(snap)['kvoff_remote_errors_total{engine="0",kind="connection"}'] == 1.0


def test_a_remote_tier_feeds_one_accumulator(redis_server: RedisServer) -> None:
    from kvoff import StatsAccumulator

    rig = Rig()
    nbytes = rig.transfers[0].cpu_block_bytes
    layout = RemoteLayout(
        model="m", dtype="bfloat16", layout="kv_split", block_bytes=nbytes,
        cpu_block_size=64, gpu_block_size=16,
    )  # fmt: skip
    mine, other = StatsAccumulator(), StatsAccumulator()
    with RemoteTier.for_worker(redis_server.url, layout) as tier:
        OffloadingWorker(rig.transfers[0], JobTracker(stats=mine), remote=tier)
        OffloadingWorker(rig.transfers[0], JobTracker(stats=mine), remote=tier)  # the same: fine
        assert tier.stats.accumulator is mine
        with pytest.raises(InvalidStateError, match="already forwards into another"):
            OffloadingWorker(rig.transfers[0], JobTracker(stats=other), remote=tier)
        assert tier.stats.accumulator is mine
        with pytest.raises(InvalidArgumentError, match="must be a StatsAccumulator, got dict"):
            tier.stats.attach({})  # type: ignore[arg-type]
        assert tier.stats.accumulator is mine
    with pytest.raises(InvalidArgumentError, match="stats must be a StatsAccumulator or None"):
        OffloadingScheduler(rig.manager, 16, 64, stats=object())  # type: ignore[arg-type]
