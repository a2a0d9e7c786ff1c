"""The connector test rig: one scheduler, ``n`` workers (tensor-parallel ranks) on CPU tensors,
and requests whose hashes and GPU block ids the tests check exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from kvoff import JobTracker, OffloadingManager, StatsAccumulator
from kvoff.connector import (
    OffloadingScheduler,
    OffloadingWorker,
    RequestStep,
    StepMetadata,
    WorkerOutput,
)
from kvoff.transfer import CpuGpuTransfer, TransferResult

GBS, CBS = 4, 8  # two GPU blocks per CPU block
NUM_GPU_BLOCKS = 40
NUM_CPU_BLOCKS = 8

# Request A: 33 prompt tokens = 8 full GPU blocks + 1 token. Its CPU blocks are named by the
# hash of the last GPU block in each: 101, 103, 105, 107.
A_HASHES = list(range(100, 108))
A_IDS = [3, 9, 1, 20, 7, 5, 12, 30, 2]
B_HASHES = [*A_HASHES, 200, 201]  # shares A's 32-token prefix, 40 tokens
B_IDS = [10, 11, 13, 14, 15, 16, 17, 18, 19, 21]


def make_kv(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(-1000, 1000, (2, NUM_GPU_BLOCKS, GBS, 2, 8), generator=g).to(torch.bfloat16)
        for _ in range(2)
    ]


class Rig:
    """One scheduler, ``n`` workers (tensor-parallel ranks), one shared stats accumulator.

    ``remote``: a Redis URL; the scheduler and each worker then get their side of the remote
    tier (``remote_kw`` goes to both ``RemoteTier`` constructors, ``sched_kw`` to the
    scheduler). ``kv_seed``: rank ``r``'s GPU tensors are ``make_kv(kv_seed + r)``, or zeros
    when ``kv_seed`` is None (an engine that computed nothing).
    """

    def __init__(
        self,
        num_workers: int = 1,
        num_cpu_blocks: int = NUM_CPU_BLOCKS,
        *,
        on_result: Callable[[TransferResult], None] | None = None,
        remote: str | None = None,
        kv_seed: int | None = 0,
        remote_kw: dict[str, Any] | None = None,
        sched_kw: dict[str, Any] | None = None,
    ) -> None:
        self.stats = StatsAccumulator()
        self.manager = OffloadingManager(num_cpu_blocks, block_size=CBS, stats=self.stats)
        if kv_seed is None:
            self.kv = [[torch.zeros_like(t) for t in make_kv(0)] for _ in range(num_workers)]
        else:
            self.kv = [make_kv(kv_seed + rank) for rank in range(num_workers)]
        self.transfers = [
            CpuGpuTransfer(kv, GBS, CBS, num_cpu_blocks, layout="kv_split") for kv in self.kv
        ]
        self.remote_tiers: list[Any] = []
        sched_remote = None
        worker_remotes: list[Any] = [None] * num_workers
        if remote is not None:
            from kvoff.remote import RemoteLayout, RemoteTier

            layout = RemoteLayout(
                model="test/rig", dtype="bfloat16", layout="kv_split",
                block_bytes=self.transfers[0].cpu_block_bytes, cpu_block_size=CBS,
                gpu_block_size=GBS, tp_size=num_workers,
            )  # fmt: skip
            kw = {"backoff_initial": 0.02, "backoff_max": 0.2, **(remote_kw or {})}
            sched_remote = RemoteTier.for_scheduler(remote, layout, **kw)
            worker_remotes = [
                RemoteTier.for_worker(remote, layout, rank, **kw) for rank in range(num_workers)
            ]
            self.remote_tiers = [sched_remote, *worker_remotes]
        self.sched = OffloadingScheduler(
            self.manager, GBS, CBS, num_workers=num_workers, remote=sched_remote,
            stats=self.stats, **(sched_kw or {}),
        )  # fmt: skip
        self.workers = [
            OffloadingWorker(
                t, JobTracker(stats=self.stats), rank=rank, on_result=on_result, remote=r
            )
            for rank, (t, r) in enumerate(zip(self.transfers, worker_remotes, strict=True))
        ]

    def close(self) -> None:
        for t in self.remote_tiers:
            t.close()

    @property
    def worker(self) -> OffloadingWorker:
        return self.workers[0]

    def admit(self, req: str, hashes: list[int], ids: list[int], tokens: int, computed: int = 0):
        matched = self.sched.get_num_new_matched_tokens(req, hashes, tokens, computed)
        if matched is not None:
            self.sched.update_state_after_alloc(req, hashes, ids, computed, matched)
        return matched

    def run_step(
        self, steps: list[RequestStep], finished: list[str] = ()
    ) -> tuple[StepMetadata, list[WorkerOutput]]:
        meta = self.sched.build_step(steps)
        outs = []
        for w in self.workers:
            w.start_loads(meta)
            w.submit_stores(meta)
            outs.append(w.get_finished(finished))
        for out in outs:
            self.sched.update_from_output(out)
        return meta, outs

    def block(self, worker: int, gpu_id: int) -> list[torch.Tensor]:
        return [layer[:, gpu_id].clone() for layer in self.kv[worker]]


def assert_same_block(rig: Rig, dst: int, src: int, worker: int = 0) -> None:
    for d, s in zip(rig.block(worker, dst), rig.block(worker, src), strict=True):
        assert torch.equal(d.view(torch.int16), s.view(torch.int16))


def store_a(rig: Rig) -> tuple[StepMetadata, list[WorkerOutput]]:
    assert rig.admit("A", A_HASHES, A_IDS, 33) == 0
    return rig.run_step([RequestStep("A", A_HASHES, A_IDS, 33)], finished=["A"])
