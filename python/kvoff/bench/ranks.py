"""The engine's ranks: one :class:`~kvoff.bench.shard.KvShard` in this process (``--tp 1``), or
one worker process per rank (``--tp N``), each owning its device and shard of the KV heads.

Both give the engine the same calls: a step is sent to every live rank and the replies come
back in rank order. A rank process that dies (or raises) is reported as a
:class:`RankFailure`, never as an exception: the engine must tell the scheduler
(``fail_rank``) and carry on with the others.

The protocol over each rank's pipe is a request, then one reply:
``("step", verify, meta, computing, finished)`` and ``("poll", verify, preempted)`` answer
``("ok", StepReply)``; ``("close", verify)`` answers ``("closed", mismatches, verified,
remote counters)``; any
error in the rank answers ``("error", message)`` and the rank exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from kvoff._core import StatsAccumulator
from kvoff.bench.shard import Blocks, KvShard, ShardConfig, StepReply
from kvoff.connector import StepMetadata

# Test hook: "RANK:STEPS" makes rank RANK exit (status RANK_EXIT_STATUS) when asked for step
# STEPS + 1, as a process killed mid-run would.
RANK_EXIT_ENV = "KVOFF_BENCH_TEST_RANK_EXIT"
RANK_EXIT_STATUS = 17


@dataclass(frozen=True)
class RankInfo:
    rank: int
    pid: int
    device: str  # "cpu", "cuda:0", ...
    device_name: str
    kv_heads: int
    pci_address: str | None
    numa_node: int | None  # of the rank's GPU (sysfs); None on CPU or where Linux does not say


@dataclass(frozen=True)
class RankFailure:
    rank: int
    reason: str


@dataclass(frozen=True)
class RankResult:
    """What a rank verified; ``verify_failures`` is None for a rank that failed (its count
    died with it)."""

    rank: int
    blocks_verified: int | None
    verify_failures: int | None
    # --remote: the rank's remote-tier counters since its last reply, taken as it closed.
    remote_stats: dict[str, Any] | None = None


class LocalRanks:
    """``--tp 1``: the shard lives in the engine's process and records into the engine's
    accumulator (shared with the manager), so replies carry no snapshot of their own."""

    def __init__(self, cfg: ShardConfig, stats: StatsAccumulator) -> None:
        self.shard = KvShard(cfg, stats)
        self.infos = [_info(cfg)]

    def step(
        self, meta: StepMetadata, computing: Sequence[Blocks], finished: list[str]
    ) -> tuple[list[StepReply], list[RankFailure]]:
        return [self.shard.step(meta, computing, finished)], []

    def poll(self, preempted: list[str]) -> tuple[list[StepReply], list[RankFailure]]:
        return [self.shard.poll(preempted)], []

    def verify(self, blocks: Blocks) -> None:
        self.shard.verify(blocks)

    def close(self) -> list[RankResult]:
        remote = self.shard.close_remote()
        return [RankResult(0, self.shard.blocks_verified, self.shard.mismatches(), remote)]


class ProcessRanks:
    """``--tp N``: one spawned process per rank. Construction waits until every rank has built
    its shard; a rank that cannot raises ``RuntimeError`` naming it (after stopping the rest)."""

    def __init__(self, cfg: ShardConfig, exit_hook: tuple[int, int] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: dict[int, Connection] = {}
        self._procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self._verify: list[Blocks] = []
        self._results: dict[int, RankResult] = {}
        self.infos: list[RankInfo] = []
        for rank in range(cfg.tp):
            mine, theirs = ctx.Pipe()
            exit_after = exit_hook[1] if exit_hook and exit_hook[0] == rank else None
            # One GPU per rank; CPU tensors for all of them otherwise.
            device = f"cuda:{rank}" if cfg.device == "cuda" else cfg.device
            proc = ctx.Process(
                target=_rank_main,
                args=(theirs, replace(cfg, rank=rank, device=device), exit_after),
                name=f"kvoff-bench-rank{rank}",
                daemon=True,
            )
            proc.start()
            theirs.close()  # so that the rank's exit reads as end of file here
            self._conns[rank], self._procs[rank] = mine, proc
        try:
            for rank, conn in self._conns.items():
                msg = self._recv(rank, conn)
                if isinstance(msg, RankFailure):
                    raise RuntimeError(msg.reason)
                self.infos.append(msg[1])
        except BaseException:
            self.terminate()
            raise

    @property
    def live(self) -> list[int]:
        return sorted(self._conns)

    def step(
        self, meta: StepMetadata, computing: Sequence[Blocks], finished: list[str]
    ) -> tuple[list[StepReply], list[RankFailure]]:
        return self._ask(lambda verify: ("step", verify, meta, list(computing), finished))

    def poll(self, preempted: list[str]) -> tuple[list[StepReply], list[RankFailure]]:
        return self._ask(lambda verify: ("poll", verify, preempted))

    def verify(self, blocks: Blocks) -> None:
        # Sent with the next request: nothing touches a rank's blocks between two requests.
        self._verify.append(blocks)

    def close(self) -> list[RankResult]:
        verify, self._verify = self._verify, []
        for rank, conn in list(self._conns.items()):
            msg = self._send_recv(rank, conn, ("close", verify))
            if not isinstance(msg, RankFailure):
                self._results[rank] = RankResult(rank, msg[2], msg[1], msg[3])
        for proc in self._procs.values():
            proc.join(timeout=10)
        self.terminate()
        return [self._results.get(r, RankResult(r, None, None)) for r in sorted(self._procs)]

    def terminate(self) -> None:
        """Stop every rank process still running (after an error or an interrupt)."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        for proc in self._procs.values():
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)

    def _ask(self, build: Any) -> tuple[list[StepReply], list[RankFailure]]:
        verify, self._verify = self._verify, []
        request = build(verify)
        sent, failures = [], []
        for rank, conn in list(self._conns.items()):
            try:
                conn.send(request)
                sent.append(rank)
            except OSError:  # a broken pipe: the rank is gone
                failures.append(self._failed(rank, None))
        replies = []
        for rank in sent:  # every rank works on its request while we wait for the first
            msg = self._recv(rank, self._conns[rank])
            if isinstance(msg, RankFailure):
                failures.append(msg)
            else:
                replies.append(msg[1])
        return replies, failures

    def _send_recv(self, rank: int, conn: Connection, request: tuple[Any, ...]) -> Any:
        try:
            conn.send(request)
        except OSError:
            return self._failed(rank, None)
        return self._recv(rank, conn)

    def _recv(self, rank: int, conn: Connection) -> Any:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return self._failed(rank, None)
        if msg[0] == "error":
            return self._failed(rank, msg[1])
        return msg

    def _failed(self, rank: int, error: str | None) -> RankFailure:
        conn = self._conns.pop(rank)
        conn.close()
        proc = self._procs[rank]
        proc.join(timeout=10)
        if error is None:
            reason = f"rank {rank} (pid {proc.pid}) exited with status {proc.exitcode}"
        else:
            reason = f"rank {rank} (pid {proc.pid}) failed: {error}"
        self._results[rank] = RankResult(rank, None, None)
        return RankFailure(rank, reason)


def parse_exit_hook(text: str | None) -> tuple[int, int] | None:
    """``RANK:STEPS`` from :data:`RANK_EXIT_ENV`, or None."""
    if not text:
        return None
    rank, _, steps = text.partition(":")
    return int(rank), int(steps)


def _info(cfg: ShardConfig) -> RankInfo:
    import torch

    from kvoff.bench.numa import cuda_numa_node

    device = torch.device(cfg.device)
    address, node, name = None, None, "CPU tensors (no CUDA)"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        address, node = cuda_numa_node(index)
        name = torch.cuda.get_device_name(index)
    heads = cfg.shape.num_kv_heads // cfg.tp
    return RankInfo(cfg.rank, os.getpid(), str(device), name, heads, address, node)


def _rank_main(conn: Connection, cfg: ShardConfig, exit_after: int | None) -> None:
    """A rank process: build the shard, then answer requests until told to close."""
    import torch

    try:
        if cfg.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(cfg.device))
        else:
            # The ranks share the host's cores: without this each would start one thread
            # per core and they would thrash.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.tp))
        stats = StatsAccumulator()
        shard = KvShard(cfg, stats)
        conn.send(("ready", _info(cfg)))
        steps = 0
        while True:
            try:
                request = conn.recv()
            except EOFError:  # the engine is gone
                return
            kind, verify = request[0], request[1]
            for blocks in verify:
                shard.verify(blocks)
            if kind == "close":
                remote = shard.close_remote()
                conn.send(("closed", shard.mismatches(), shard.blocks_verified, remote))
                return
            if kind == "step":
                if exit_after is not None and steps >= exit_after:
                    os._exit(RANK_EXIT_STATUS)
                steps += 1
                reply = shard.step(request[2], request[3], request[4])
            else:
                reply = shard.poll(request[2])
            reply.snapshot = stats.take()
            conn.send(("ok", reply))
    except Exception as e:  # reported to the engine, which fails this rank
        with contextlib.suppress(OSError):  # the engine may be gone too
            conn.send(("error", f"{type(e).__name__}: {e}"))
