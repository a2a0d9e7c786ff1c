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

import numpy as np
import torch

from kvoff._core import JobTracker, OffloadingManager, StatsAccumulator
from kvoff.bench.presets import ModelShape
from kvoff.bench.workload import Request, block_hashes
from kvoff.connector import (
    OffloadingScheduler,
    OffloadingWorker,
    RequestStep,
)
from kvoff.transfer import CpuGpuTransfer, TransferResult

# Fingerprints stay below 256 so they are exact in every float dtype, bf16 included.
_FP_MODULUS = 251


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


@dataclass
class _Live:
    req: Request
    hashes: list[bytes]  # GPU-block hashes of prompt + output (full blocks)
    gpu_ids: np.ndarray
    matched: int = 0
    state: str = "prefill"  # "loading" -> "prefill" -> "decode" -> done


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
        default_factory=lambda: {"GPU_to_CPU": [], "CPU_to_GPU": []}
    )


class SimulatedEngine:
    """Continuous batching over a fixed pool of GPU blocks: admit, load, prefill, decode,
    store, free. Requests whose KV cannot fit the whole GPU pool are rejected up front."""

    def __init__(
        self,
        cfg: EngineConfig,
        on_snapshot: Callable[[object], None] | None = None,
    ) -> None:
        self.cfg = cfg
        shape = cfg.shape
        self.device = torch.device(cfg.device)
        # vLLM's FlashAttention layout: per layer [2, num_blocks, block_size, kv_heads, dim].
        self.kv = [
            torch.zeros(
                (2, cfg.gpu_blocks, cfg.gpu_block_size, shape.num_kv_heads, shape.head_dim),
                dtype=shape.torch_dtype,
                device=self.device,
            )
            for _ in range(shape.num_layers)
        ]
        self.stats = StatsAccumulator()
        self.manager = OffloadingManager(
            cfg.num_cpu_blocks, block_size=cfg.cpu_block_size, policy=cfg.policy, stats=self.stats
        )
        # One rank: the worker below is rank 0 of num_workers=1.
        self.scheduler = OffloadingScheduler(
            self.manager, cfg.gpu_block_size, cfg.cpu_block_size, num_workers=1
        )
        self.transfer = CpuGpuTransfer(
            self.kv, cfg.gpu_block_size, cfg.cpu_block_size, cfg.num_cpu_blocks, layout="kv_split"
        )
        self.totals = EngineTotals()
        self.worker = OffloadingWorker(
            self.transfer, JobTracker(stats=self.stats), rank=0, on_result=self._on_result
        )
        self.on_snapshot = on_snapshot
        rng = np.random.default_rng(cfg.seed)
        # Shuffled so a request's GPU blocks are scattered, as in a long-running engine.
        self.free_ids: list[int] = [int(i) for i in rng.permutation(cfg.gpu_blocks)]
        self.waiting: deque[_Live] = deque()
        self.live: dict[str, _Live] = {}
        self.delayed: dict[str, _Live] = {}
        self._mismatch = torch.zeros((), dtype=torch.int64, device=self.device)

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
        computing: list[tuple[_Live, int, int]] = []  # (request, first block, end block)
        for live in self.live.values():
            prompt_len = len(live.req.prompt)
            if live.state == "prefill":
                end_tokens = prompt_len
                computing.append((live, live.matched // gbs, prompt_len // gbs))
            elif live.state == "decode":
                end_tokens = live.req.num_tokens
                computing.append((live, prompt_len // gbs, live.req.num_tokens // gbs))
            else:
                continue
            steps.append(RequestStep(live.req.req_id, live.hashes, live.gpu_ids, end_tokens))

        t0 = time.perf_counter()
        meta = sched.build_step(steps)
        book += time.perf_counter() - t0

        self.worker.start_loads(meta)
        self._compute(computing)
        finished: list[str] = []
        for live, _, _ in computing:
            if live.state == "prefill":
                live.state = "decode"
            else:
                finished.append(live.req.req_id)
        self.worker.submit_stores(meta)

        out = self.worker.get_finished(finished)
        t0 = time.perf_counter()
        sched.update_from_output(out)
        # The scheduler's view, not the worker's: it holds once every rank has loaded.
        loaded = sched.take_finished_loading()
        failed = sched.take_failed_loads()
        book += time.perf_counter() - t0
        self._after_output(loaded, failed, finished, book)

    def _after_output(
        self, loaded: list[str], failed: dict[str, list[int]], finished: list[str], book: float
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
            if sched.request_finished(req_id):
                self.delayed[req_id] = live
            else:
                self.free_ids.extend(int(i) for i in live.gpu_ids)
        for req_id in sched.take_freeable():
            live = self.delayed.pop(req_id)
            self.free_ids.extend(int(i) for i in live.gpu_ids)
        book += time.perf_counter() - t0
        t.bookkeeping_seconds += book
        if self.on_snapshot is not None:
            self.on_snapshot(self.stats.take())

    def flush(self) -> None:
        """Wait for every transfer still in flight and apply its result."""
        while self.worker.num_jobs_in_flight or self.delayed:
            self.worker.handle_preemptions(list(self.delayed))
            out = self.worker.get_finished()
            self.scheduler.update_from_output(out)
            loaded = self.scheduler.take_finished_loading()
            failed = self.scheduler.take_failed_loads()
            self._after_output(loaded, failed, [], 0.0)
            if not out.transfers and self.worker.num_jobs_in_flight:
                time.sleep(0.0005)
        t = self.totals
        t.verify_failures = int(self._mismatch.item())

    # -- simulated compute and verification -----------------------------------------------

    def _fingerprints(self, hashes: list[bytes]) -> torch.Tensor:
        fp = np.frombuffer(b"".join(h[:4] for h in hashes), dtype="<u4").astype(np.int64)
        return torch.from_numpy(fp % _FP_MODULUS).to(self.device)

    def _layer_values(self, fp: torch.Tensor, layer: int, kv: int) -> torch.Tensor:
        return ((fp + 2 * layer + kv) % _FP_MODULUS + 1).to(self.cfg.shape.torch_dtype)

    def _compute(self, computing: list[tuple[_Live, int, int]]) -> None:
        ids: list[np.ndarray] = []
        hashes: list[bytes] = []
        for live, first, end in computing:
            if end > first:
                ids.append(live.gpu_ids[first:end])
                hashes.extend(live.hashes[first:end])
        if not hashes:
            return
        idx = torch.from_numpy(np.concatenate(ids)).to(self.device)
        fp = self._fingerprints(hashes)
        for layer, tensor in enumerate(self.kv):
            for kv in (0, 1):
                tensor[kv][idx] = self._layer_values(fp, layer, kv).view(-1, 1, 1, 1)

    def _queue_verify(self, live: _Live) -> None:
        n = live.matched // self.cfg.gpu_block_size
        idx = torch.from_numpy(live.gpu_ids[:n]).to(self.device)
        fp = self._fingerprints(live.hashes[:n])
        for layer, tensor in enumerate(self.kv):
            for kv in (0, 1):
                want = self._layer_values(fp, layer, kv).view(-1, 1, 1, 1)
                self._mismatch += (tensor[kv].index_select(0, idx) != want).any(dim=(1, 2, 3)).sum()
        self.totals.blocks_verified += n

    def _on_result(self, result: TransferResult) -> None:
        if result.success:
            self.totals.transfer_times[result.transfer_type].append(result.transfer_time)
