"""One tensor-parallel rank's half of the simulated engine: its shard of the KV heads on its
device, its CPU tier, its worker, and the fingerprints it writes and checks.

With ``--tp 1`` the engine drives one shard in its own process; with ``--tp N`` each of N
processes owns one (``kvoff.bench.ranks``). The fingerprint of a block depends on the rank as
well as on the block's hash, layer and K/V, so a block copied from another rank's shard fails
verification like a torn one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kvoff._core import Direction, JobTracker, OffloadingConnectorStats, StatsAccumulator
from kvoff.bench.host_baseline import CopyBaseline
from kvoff.bench.presets import ModelShape
from kvoff.connector import OffloadingWorker, StepMetadata, WorkerOutput
from kvoff.transfer import CpuGpuTransfer, TransferResult

if TYPE_CHECKING:
    from kvoff.remote import RemoteTier

# Fingerprints stay below 256 so they are exact in every float dtype, bf16 included.
_FP_MODULUS = 251

# (GPU block ids, their hashes) of the blocks one step computes or one load delivered.
Blocks = tuple[np.ndarray, list[bytes]]


@dataclass(frozen=True)
class ShardConfig:
    shape: ModelShape
    gpu_blocks: int
    num_cpu_blocks: int
    gpu_block_size: int
    cpu_block_size: int
    device: str
    rank: int = 0
    tp: int = 1
    # --remote: the remote tier's URL (this rank fetches and writes its shard's keys).
    remote_url: str | None = None
    # Allocate (pin) the CPU tier in the background and serve meanwhile (the scheduler's
    # usable limit follows each output's ready_cpu_blocks), or all of it before serving.
    tier_in_background: bool = True


@dataclass
class StepReply:
    """What a shard hands back after a step or a poll."""

    output: WorkerOutput
    jobs_in_flight: int
    # Per direction, the durations of the transfers that completed successfully.
    transfer_times: dict[str, list[float]] = field(default_factory=dict)
    # The rank's interval snapshot, where the rank has an accumulator of its own (--tp N).
    snapshot: OffloadingConnectorStats | None = None
    # --remote: the rank's remote-tier counters since its last reply (RemoteStats.take()).
    remote_stats: dict[str, Any] | None = None
    # Seconds the rank's CPU tier took to allocate (and pin) whole; None while it still is.
    cpu_alloc_seconds: float | None = None
    # CPU tensors: per direction, (bytes, seconds) of a plain copy_ of each transfer's bytes.
    copy_samples: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


class KvShard:
    """``stats`` is the accumulator the shard's :class:`~kvoff.JobTracker` records into: the
    engine's own with one rank (shared with the manager, as in one process), the rank's own
    otherwise."""

    def __init__(self, cfg: ShardConfig, stats: StatsAccumulator) -> None:
        shape = cfg.shape
        if shape.num_kv_heads % cfg.tp:
            raise ValueError(f"{shape.num_kv_heads} KV heads do not split {cfg.tp} ways")
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self._dtype = shape.torch_dtype
        # Rank r's layers continue rank r-1's numbering, so no two ranks share a fingerprint
        # for one block and layer (2 * layers * (r - r') is never a multiple of 251 here).
        self._offset = 2 * shape.num_layers * cfg.rank
        heads = shape.num_kv_heads // cfg.tp
        # vLLM's FlashAttention layout: per layer [2, num_blocks, block_size, kv_heads, dim].
        self.kv = [
            torch.zeros(
                (2, cfg.gpu_blocks, cfg.gpu_block_size, heads, shape.head_dim),
                dtype=self._dtype,
                device=self.device,
            )
            for _ in range(shape.num_layers)
        ]
        self.transfer = CpuGpuTransfer(
            self.kv,
            cfg.gpu_block_size,
            cfg.cpu_block_size,
            cfg.num_cpu_blocks,
            layout="kv_split",
            alloc_in_background=cfg.tier_in_background,
        )
        self.remote: RemoteTier | None = None
        if cfg.remote_url is not None:
            from kvoff.bench.remote import remote_layout
            from kvoff.remote import RemoteTier

            layout = remote_layout(
                shape, cfg.cpu_block_size, cfg.gpu_block_size, cfg.tp, rank=cfg.rank
            )
            self.remote = RemoteTier.for_worker(cfg.remote_url, layout, rank=cfg.rank)
        self.worker = OffloadingWorker(
            self.transfer,
            JobTracker(stats=stats),
            rank=cfg.rank,
            on_result=self._on_result,
            remote=self.remote,
        )
        self.blocks_verified = 0
        self._mismatch = torch.zeros((), dtype=torch.int64, device=self.device)
        self._times: dict[str, list[float]] = {d: [] for d in Direction.GPU}
        self._baseline = CopyBaseline() if self.device.type == "cpu" else None

    def step(
        self, meta: StepMetadata, computing: Sequence[Blocks], finished: list[str]
    ) -> StepReply:
        """One engine step on this shard: loads, compute, stores, then what finished."""
        self.worker.start_loads(meta)
        self.compute(computing)
        self.worker.submit_stores(meta)
        return self._reply(self.worker.get_finished(finished))

    def poll(self, preempted: list[str]) -> StepReply:
        """Flush the stores of ``preempted`` requests and report what finished."""
        self.worker.handle_preemptions(preempted)
        return self._reply(self.worker.get_finished())

    def close_remote(self) -> dict[str, Any] | None:
        """Close the remote tier (what its writers still queue is dropped) and return its
        counters since the last reply."""
        if self.remote is None:
            return None
        self.remote.close()
        return self.remote.stats.take()

    def mismatches(self) -> int:
        """GPU blocks (counted once per layer and K/V) that failed verification so far."""
        return int(self._mismatch.item())

    # -- simulated compute and verification -----------------------------------------------

    def _fingerprints(self, hashes: list[bytes]) -> torch.Tensor:
        fp = np.frombuffer(b"".join(h[:4] for h in hashes), dtype="<u4").astype(np.int64)
        return torch.from_numpy(fp % _FP_MODULUS).to(self.device)

    def _layer_values(self, fp: torch.Tensor, layer: int, kv: int) -> torch.Tensor:
        return ((fp + self._offset + 2 * layer + kv) % _FP_MODULUS + 1).to(self._dtype)

    def compute(self, computing: Sequence[Blocks]) -> None:
        ids = [b[0] for b in computing if len(b[0])]
        hashes = [h for b in computing for h in b[1]]
        if not hashes:
            return
        idx = torch.from_numpy(np.concatenate(ids)).to(self.device)
        fp = self._fingerprints(hashes)
        for layer, tensor in enumerate(self.kv):
            for kv in (0, 1):
                tensor[kv][idx] = self._layer_values(fp, layer, kv).view(-1, 1, 1, 1)

    def verify(self, blocks: Blocks) -> None:
        """Queue the check of loaded GPU blocks against their fingerprints (read back, on
        the device's stream, by :meth:`mismatches`)."""
        gpu_ids, hashes = blocks
        if not hashes:
            return
        idx = torch.from_numpy(gpu_ids).to(self.device)
        fp = self._fingerprints(hashes)
        for layer, tensor in enumerate(self.kv):
            for kv in (0, 1):
                want = self._layer_values(fp, layer, kv).view(-1, 1, 1, 1)
                self._mismatch += (tensor[kv].index_select(0, idx) != want).any(dim=(1, 2, 3)).sum()
        self.blocks_verified += len(hashes)

    def _on_result(self, result: TransferResult) -> None:
        if result.success:
            self._times[result.transfer_type].append(result.transfer_time)
            if self._baseline is not None:
                self._baseline.sample(result.transfer_type, result.transfer_size)

    def _reply(self, out: WorkerOutput) -> StepReply:
        times, self._times = self._times, {d: [] for d in Direction.GPU}
        remote = self.remote.stats.take() if self.remote is not None else None
        return StepReply(
            out,
            self.worker.num_jobs_in_flight,
            times,
            remote_stats=remote,
            cpu_alloc_seconds=self.transfer.cpu_alloc_seconds,
            copy_samples=self._baseline.take() if self._baseline is not None else {},
        )
