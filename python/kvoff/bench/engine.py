"""A simulated inference engine that drives the scheduler and worker halves on real tensors.

The model is not run: a step's "compute" writes a fingerprint into every KV block it fills
(a value derived from the block's hash, different per layer and for K and V). When a load from
the CPU tier completes, the loaded GPU blocks are checked against the fingerprints their hashes
predict, so a wrong or torn block is caught, not just counted.

There is no GPU prefix cache: every reuse comes from the CPU tier, which is what this bench
measures.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kvoff._core import Direction, OffloadingConnectorStats, OffloadingManager, StatsAccumulator
from kvoff.bench.presets import ModelShape
from kvoff.bench.ranks import LocalRanks, ProcessRanks, RankFailure, RankInfo, RankResult
from kvoff.bench.remote import DRAIN_SECONDS, RemoteTally, remote_layout
from kvoff.bench.shard import Blocks, ShardConfig, StepReply
from kvoff.bench.workload import Request, block_hashes
from kvoff.connector import OffloadingScheduler, RequestStep, StepMetadata

if TYPE_CHECKING:
    from kvoff.remote import RemoteTier

# (rank, that rank's interval snapshot) for each rank with an accumulator of its own.
RankSnapshots = list[tuple[int, OffloadingConnectorStats]]


@dataclass(frozen=True)
class EngineConfig:
    shape: ModelShape
    gpu_blocks: int
    num_cpu_blocks: int
    gpu_block_size: int = 16
    cpu_block_size: int = 64
    policy: str = "lru"
    max_batch_tokens: int = 16384
    device: str = "cpu"
    seed: int = 0
    # Tensor-parallel ranks: 1 runs the worker half in this process, N > 1 in N processes.
    tp: int = 1
    # Test hook (--tp N only): (rank, steps) makes that rank exit after that many steps.
    exit_hook: tuple[int, int] | None = None
    # --remote: the remote tier behind the CPU tier (kvoff.bench.remote).
    remote_url: str | None = None
    # Serve while the CPU tier is allocated (pinned) in the background (False: pin it all
    # first, as before the growing tier).
    tier_in_background: bool = True


@dataclass
class Startup:
    """How soon the engine served, and how fast its CPU tier was pinned; seconds from the
    start of the engine's construction (KV tensors, tier, ranks)."""

    tier_in_background: bool
    # The end of the first step (requests admitted and computed), and of the first step that
    # issued a store (the tier in use).
    first_step_seconds: float | None = None
    first_store_seconds: float | None = None
    # The end of the first step by which every rank reported its tier whole.
    tier_ready_seconds: float | None = None
    # The usable CPU blocks (minimum over ranks) when the run ended.
    usable_blocks_at_end: int = 0
    # Per rank, seconds its tier took to allocate (pin) whole, from the tier's start; and the
    # rate of the slowest: one rank's tier bytes over its seconds, in GiB/s.
    alloc_seconds_by_rank: dict[int, float] = field(default_factory=dict)
    pinning_gib_per_s: float | None = None


@dataclass
class _Live:
    req: Request
    hashes: list[bytes]  # GPU-block hashes of prompt + output (full blocks)
    gpu_ids: np.ndarray
    matched: int = 0
    state: str = "prefill"  # "loading" -> "prefill" -> "decode" -> done


@dataclass
class RankFailed:
    """A rank that died or raised mid-run, and what its failure cost."""

    rank: int
    reason: str
    step: int
    # Transfers in flight that it had not reported: fail_rank() failed them.
    transfers_failed: int
    # CPU blocks whose store was among those; none of them may stay in the tier.
    store_blocks_failed: int
    store_blocks_resident_after: int | None = None
    # A probe after the run: the blocks of the last finished request that the tier still
    # holds, and the tokens the scheduler would serve of them (0: nothing is served).
    probe_blocks_in_tier: int | None = None
    probe_tokens_served: int | None = None


@dataclass
class EngineTotals:
    requests_finished: int = 0
    requests_rejected: int = 0
    steps: int = 0
    tokens_prompt: int = 0
    tokens_from_cpu: int = 0
    blocks_verified: int = 0
    verify_failures: int = 0
    failed_loads: int = 0
    lookups_deferred: int = 0
    bookkeeping_seconds: float = 0.0
    wall_seconds: float = 0.0
    transfer_times: dict[str, list[float]] = field(
        default_factory=lambda: {d: [] for d in Direction.GPU}
    )
    # Per rank: transfer durations (--tp N only; with one rank they are transfer_times).
    rank_transfer_times: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    rank_failures: list[RankFailed] = field(default_factory=list)
    # --remote: the remote tier's counters (scheduler and ranks) and what was left unwritten.
    remote: RemoteTally | None = None
    remote_unsettled_at_exit: int = 0
    startup: Startup | None = None
    # CPU tensors: per direction, bytes and seconds of the copy_ baseline (host_baseline.py).
    copy_bytes: dict[str, int] = field(default_factory=dict)
    copy_seconds: dict[str, float] = field(default_factory=dict)


class SimulatedEngine:
    """Continuous batching over a fixed pool of GPU blocks: admit, load, prefill, decode,
    store, free. Requests whose KV cannot fit the whole GPU pool are rejected up front.

    The scheduler half (manager, scheduler, request bookkeeping) lives here; the worker half
    is ``cfg.tp`` ranks (:mod:`kvoff.bench.ranks`). ``on_snapshot`` gets, after every step, the
    engine's interval snapshot (scheduler and every rank aggregated) and the ranks' own.
    """

    def __init__(
        self,
        cfg: EngineConfig,
        on_snapshot: Callable[[OffloadingConnectorStats, RankSnapshots], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._born = time.perf_counter()
        self.stats = StatsAccumulator()
        # A tier pinned in the background starts with nothing usable; the ranks' outputs raise
        # the limit (OffloadingScheduler, "growing tier").
        self.manager = OffloadingManager(
            cfg.num_cpu_blocks,
            block_size=cfg.cpu_block_size,
            policy=cfg.policy,
            stats=self.stats,
            usable_blocks=0 if cfg.tier_in_background else None,
        )
        # With --remote the scheduler asks the remote tier (lookups) from this process; each
        # rank fetches and writes its shard's blocks from its own.
        self.remote: RemoteTier | None = None
        if cfg.remote_url is not None:
            from kvoff.remote import RemoteTier  # needs the remote extra (redis-py, xxhash)

            layout = remote_layout(cfg.shape, cfg.cpu_block_size, cfg.gpu_block_size, cfg.tp)
            self.remote = RemoteTier.for_scheduler(cfg.remote_url, layout)
        self.scheduler = OffloadingScheduler(
            self.manager,
            cfg.gpu_block_size,
            cfg.cpu_block_size,
            num_workers=cfg.tp,
            remote=self.remote,
            # Hits by tier and the scheduler tier's lookups land in the snapshots (/metrics).
            stats=self.stats,
        )
        shard = ShardConfig(
            cfg.shape,
            cfg.gpu_blocks,
            cfg.num_cpu_blocks,
            cfg.gpu_block_size,
            cfg.cpu_block_size,
            cfg.device,
            rank=0,
            tp=cfg.tp,
            remote_url=cfg.remote_url,
            tier_in_background=cfg.tier_in_background,
        )
        # One rank shares this process and its accumulator, as an engine without tensor
        # parallelism would; N ranks are N processes, each recording into its own.
        self.ranks: LocalRanks | ProcessRanks = (
            LocalRanks(shard, self.stats) if cfg.tp == 1 else ProcessRanks(shard, cfg.exit_hook)
        )
        self.rank_infos: list[RankInfo] = self.ranks.infos
        self.rank_results: list[RankResult] = []
        self.totals = EngineTotals(
            remote=RemoteTally() if self.remote is not None else None,
            startup=Startup(cfg.tier_in_background),
        )
        # Ranks whose tier is whole, with the seconds it took them (from their tier's start).
        self._alloc_seconds: dict[int, float] = {}
        self.on_snapshot = on_snapshot
        rng = np.random.default_rng(cfg.seed)
        # Shuffled so a request's GPU blocks are scattered, as in a long-running engine.
        self.free_ids: list[int] = [int(i) for i in rng.permutation(cfg.gpu_blocks)]
        self.waiting: deque[_Live] = deque()
        self.live: dict[str, _Live] = {}
        self.delayed: dict[str, _Live] = {}
        self._jobs_in_flight = 0
        self._admitting = True
        # --tp N only: the CPU hashes of each store in flight, to check after a rank failure
        # that none of its failed stores left a block in the tier.
        self._store_hashes: dict[int, list[bytes]] = {}
        self._failed_store_hashes: list[bytes] = []
        # Prompt hashes of the latest finished requests: after a rank failure, the probe
        # looks for blocks of theirs still in the tier.
        self._recent: deque[list[bytes]] = deque(maxlen=64)

    def close(self) -> None:
        """Stop the rank processes (after an error; :meth:`run` closes them itself) and the
        scheduler's remote tier."""
        if isinstance(self.ranks, ProcessRanks):
            self.ranks.terminate()
        if self.remote is not None:
            self.remote.close()

    # -- workload -------------------------------------------------------------------------

    def submit(self, req: Request) -> bool:
        """Queue a request; ``False`` if its KV can never fit the GPU pool."""
        if -(-req.num_tokens // self.cfg.gpu_block_size) > self.cfg.gpu_blocks:
            return False
        tokens = np.concatenate([req.prompt, req.output])
        self.waiting.append(
            _Live(req, block_hashes(tokens, self.cfg.gpu_block_size), np.empty(0, np.int64))
        )
        return True

    def run(
        self, requests: Iterator[Request], deadline: float | None, progress: Callable[[], None]
    ) -> EngineTotals:
        start = time.perf_counter()
        exhausted = False
        while True:
            if not exhausted and deadline is not None and time.perf_counter() >= deadline:
                # Out of time: requests not yet admitted are dropped, admitted ones finish.
                exhausted = True
                self.waiting.clear()
            if not exhausted and not self._admitting:
                # A rank failed: the admitted requests finish, the others are dropped.
                exhausted = True
            if not exhausted:
                # Keep a short queue: enough to fill a batch, not the whole workload at once.
                while len(self.waiting) < 64:
                    req = next(requests, None)
                    if req is None:
                        exhausted = True
                        break
                    if not self.submit(req):
                        self.totals.requests_rejected += 1
            if exhausted and not (self.waiting or self.live):
                break
            self.step()
            progress()
        self.flush()
        self.totals.wall_seconds = time.perf_counter() - start
        return self.totals

    # -- one engine step --------------------------------------------------------------------

    def step(self) -> None:
        cfg, sched, t = self.cfg, self.scheduler, self.totals
        t.steps += 1
        gbs = cfg.gpu_block_size
        book = 0.0
        budget = cfg.max_batch_tokens
        while self.waiting and budget > 0:
            live = self.waiting[0]
            need = -(-live.req.num_tokens // gbs)
            if need > len(self.free_ids):
                break
            prompt_len = len(live.req.prompt)
            prompt_hashes = live.hashes[: prompt_len // gbs]
            t0 = time.perf_counter()
            matched = sched.get_num_new_matched_tokens(
                live.req.req_id, prompt_hashes, prompt_len, 0
            )
            book += time.perf_counter() - t0
            if matched is None:
                # Another request is loading these blocks; admit this one next step.
                t.lookups_deferred += 1
                break
            self.waiting.popleft()
            live.gpu_ids = np.array([self.free_ids.pop() for _ in range(need)], dtype=np.int64)
            t0 = time.perf_counter()
            sched.update_state_after_alloc(live.req.req_id, prompt_hashes, live.gpu_ids, 0, matched)
            book += time.perf_counter() - t0
            live.matched = matched
            live.state = "loading" if matched else "prefill"
            t.tokens_prompt += prompt_len
            t.tokens_from_cpu += matched
            self.live[live.req.req_id] = live
            budget -= prompt_len - matched

        steps: list[RequestStep] = []
        computing: list[Blocks] = []
        advancing: list[_Live] = []
        for live in self.live.values():
            prompt_len = len(live.req.prompt)
            if live.state == "prefill":
                end_tokens = prompt_len
                first, end = live.matched // gbs, prompt_len // gbs
            elif live.state == "decode":
                end_tokens = live.req.num_tokens
                first, end = prompt_len // gbs, live.req.num_tokens // gbs
            else:
                continue
            advancing.append(live)
            if end > first:
                computing.append((live.gpu_ids[first:end], live.hashes[first:end]))
            steps.append(RequestStep(live.req.req_id, live.hashes, live.gpu_ids, end_tokens))

        t0 = time.perf_counter()
        meta = sched.build_step(steps)
        book += time.perf_counter() - t0
        if cfg.tp > 1:
            self._track_stores(meta)

        finished: list[str] = []
        for live in advancing:
            if live.state == "prefill":
                live.state = "decode"
            else:
                finished.append(live.req.req_id)
        # Every rank: loads, then compute, then stores, then what finished.
        replies, failures = self.ranks.step(meta, computing, finished)

        t0 = time.perf_counter()
        self._apply(replies, failures)
        self._note_startup(bool(meta.stores))
        # The scheduler's view, not a worker's: it holds once every rank has loaded.
        loaded = sched.take_finished_loading()
        failed = sched.take_failed_loads()
        book += time.perf_counter() - t0
        self._after_output(loaded, failed, finished, book, replies)

    def _note_startup(self, stored: bool) -> None:
        s = self.totals.startup
        assert s is not None
        now = time.perf_counter() - self._born
        if s.first_step_seconds is None:
            s.first_step_seconds = now
        if stored and s.first_store_seconds is None:
            s.first_store_seconds = now
        s.usable_blocks_at_end = self.scheduler.usable_cpu_blocks
        if s.tier_ready_seconds is None and len(self._alloc_seconds) == self.cfg.tp:
            # The first step after which every rank had its whole tier (to a step's precision).
            s.tier_ready_seconds = now
            s.alloc_seconds_by_rank = dict(sorted(self._alloc_seconds.items()))
            slowest = max(self._alloc_seconds.values())
            cfg = self.cfg
            rank_bytes = cfg.num_cpu_blocks * cfg.cpu_block_size * cfg.shape.bytes_per_token()
            rank_bytes //= cfg.tp
            s.pinning_gib_per_s = rank_bytes / 2**30 / slowest if slowest > 0 else None

    def _apply(self, replies: list[StepReply], failures: list[RankFailure]) -> None:
        for reply in replies:
            if reply.cpu_alloc_seconds is not None:
                self._alloc_seconds.setdefault(reply.output.rank, reply.cpu_alloc_seconds)
            self.scheduler.update_from_output(reply.output)
        self._jobs_in_flight = max((r.jobs_in_flight for r in replies), default=0)
        for failure in failures:
            self._rank_failed(failure)

    def _after_output(
        self,
        loaded: list[str],
        failed: dict[str, list[int]],
        finished: list[str],
        book: float,
        replies: list[StepReply],
    ) -> None:
        sched, t = self.scheduler, self.totals
        for req_id in failed:
            live = self.live[req_id]
            # The engine recomputes what the CPU tier failed to deliver.
            t.failed_loads += 1
            t.tokens_from_cpu -= live.matched
            live.matched = 0
            live.state = "prefill"
        for req_id in loaded:
            waiting = self.live.get(req_id)
            if waiting is not None and waiting.state == "loading":
                self._queue_verify(waiting)
                waiting.state = "prefill"
        t0 = time.perf_counter()
        for req_id in finished:
            live = self.live.pop(req_id)
            t.requests_finished += 1
            if self.cfg.tp > 1:
                self._recent.append(live.hashes[: len(live.req.prompt) // self.cfg.gpu_block_size])
            if sched.request_finished(req_id):
                self.delayed[req_id] = live
            else:
                self.free_ids.extend(int(i) for i in live.gpu_ids)
        for req_id in sched.take_freeable():
            live = self.delayed.pop(req_id)
            self.free_ids.extend(int(i) for i in live.gpu_ids)
        book += time.perf_counter() - t0
        t.bookkeeping_seconds += book
        rank_snaps: RankSnapshots = []
        self._tally_remote(replies)
        for reply in replies:
            for d, times in reply.transfer_times.items():
                t.transfer_times[d].extend(times)
            for d, samples in reply.copy_samples.items():
                t.copy_bytes[d] = t.copy_bytes.get(d, 0) + sum(n for n, _ in samples)
                t.copy_seconds[d] = t.copy_seconds.get(d, 0.0) + sum(s for _, s in samples)
            if reply.snapshot is not None:
                rank = reply.output.rank
                rank_snaps.append((rank, reply.snapshot))
                mine = t.rank_transfer_times.setdefault(rank, {d: [] for d in Direction.GPU})
                for d, times in reply.transfer_times.items():
                    mine[d].extend(times)
        if self.on_snapshot is not None:
            snap = self.stats.take()
            for _, rank_snap in rank_snaps:
                snap.aggregate(rank_snap)
            self.on_snapshot(snap, rank_snaps)

    def _tally_remote(self, replies: list[StepReply]) -> None:
        tally = self.totals.remote
        if tally is None or self.remote is None:
            return
        tally.add("scheduler", self.remote.stats.take())
        for reply in replies:
            if reply.remote_stats is not None:
                tally.add(f"rank{reply.output.rank}", reply.remote_stats)

    def _remote_busy(self) -> bool:
        """Fetches not yet reported, blocks pinned for writing, or blocks in a rank's
        write-behind queue (as of the ranks' last replies)."""
        path, tally = self.scheduler.remote, self.totals.remote
        if path is None or tally is None:
            return False
        return bool(path.num_fetches_in_flight or path.num_write_pins or not tally.writes_settled())

    def flush(self) -> None:
        """Wait for every transfer still in flight and apply its result (and, with
        --remote, for write-behind to empty, at most DRAIN_SECONDS), then close the ranks
        (collecting what each verified)."""
        drain_until = time.perf_counter() + DRAIN_SECONDS
        while (
            self._jobs_in_flight
            or self.delayed
            or (self._remote_busy() and time.perf_counter() < drain_until)
        ):
            if self._jobs_in_flight or self.delayed:
                replies, failures = self.ranks.poll(list(self.delayed))
            else:
                # Only the remote tier is busy: an empty step carries the writes the scheduler
                # offered since the last one (stores completed during this flush).
                replies, failures = self.ranks.step(self.scheduler.build_step([]), [], [])
            self._apply(replies, failures)
            loaded = self.scheduler.take_finished_loading()
            failed = self.scheduler.take_failed_loads()
            self._after_output(loaded, failed, [], 0.0, replies)
            if not any(r.output.transfers for r in replies) and self._jobs_in_flight:
                time.sleep(0.0005)
            elif not self._jobs_in_flight and not self.delayed:
                time.sleep(0.005)  # only the remote tier's threads are still at work
        if self.scheduler.remote is not None:
            self.totals.remote_unsettled_at_exit = self.scheduler.remote.num_write_pins
        self.rank_results = self.ranks.close()
        if self.totals.remote is not None:
            for result in self.rank_results:
                if result.remote_stats is not None:
                    self.totals.remote.add(f"rank{result.rank}", result.remote_stats)
        t = self.totals
        t.verify_failures = sum(r.verify_failures or 0 for r in self.rank_results)
        if t.rank_failures:
            self._after_rank_failure()

    # -- rank failures (--tp N) -------------------------------------------------------------

    def _track_stores(self, meta: StepMetadata) -> None:
        ratio = self.scheduler.ratio
        for spec in meta.stores:
            live = self.live[spec.req_id]
            where = {int(g): i for i, g in enumerate(live.gpu_ids)}
            # A CPU block is named by the hash of its last GPU block.
            last = spec.gpu_block_ids[ratio - 1 :: ratio]
            self._store_hashes[spec.transfer_id] = [live.hashes[where[int(g)]] for g in last]
        owed = {tid for tids in self.scheduler.pending_reports().values() for tid in tids}
        self._store_hashes = {k: v for k, v in self._store_hashes.items() if k in owed}

    def _rank_failed(self, failure: RankFailure) -> None:
        owed = self.scheduler.pending_reports().get(failure.rank, [])
        hashes = [h for tid in owed for h in self._store_hashes.get(tid, [])]
        self.scheduler.fail_rank(failure.rank)
        self._failed_store_hashes.extend(hashes)
        self.totals.rank_failures.append(
            RankFailed(failure.rank, failure.reason, self.totals.steps, len(owed), len(hashes))
        )
        # Without the rank's shard nothing more is served: finish what was admitted, stop.
        self._admitting = False
        self.waiting.clear()

    def _after_rank_failure(self) -> None:
        resident = sum(h in self.manager for h in self._failed_store_hashes)
        # The longest run of blocks still in the tier among the recent requests (from any
        # block on, as if the GPU prefix cache held the ones before it): the scheduler must
        # serve none of it. This runs after the last snapshot, so it counts in no totals.
        in_tier, hashes, start = 0, [], 0
        for h in self._recent:
            names = self.scheduler.cpu_block_hashes(h)
            for i, name in enumerate(names):
                hits = self.manager.lookup(names[i:]) if name in self.manager else 0
                if hits > in_tier:
                    in_tier, hashes, start = hits, h, i
        gbs, cbs = self.cfg.gpu_block_size, self.cfg.cpu_block_size
        served = self.scheduler.get_num_new_matched_tokens(
            "probe-after-failure", hashes, len(hashes) * gbs + 1, start * cbs
        )
        for f in self.totals.rank_failures:
            f.store_blocks_resident_after = resident
            f.probe_blocks_in_tier = in_tier
            f.probe_tokens_served = served

    # -- verification -----------------------------------------------------------------------

    def _queue_verify(self, live: _Live) -> None:
        n = live.matched // self.cfg.gpu_block_size
        self.ranks.verify((live.gpu_ids[:n], live.hashes[:n]))
        self.totals.blocks_verified += n
