"""Should a block go to the remote tier when it is stored in the CPU tier, or when the CPU tier
evicts it? Measured two ways:

1. Sharing: two instances (A, then B starting ``--lag`` requests later, the two alternating)
   replay kvoff bench's multi-turn workload with private CPU tiers (the real
   ``OffloadingManager``, LRU) and one shared remote tier. Per policy: blocks sent to the
   remote tier, and B's prompt blocks served by its CPU tier, by the remote tier, or computed.
2. Step-thread cost: what handing one block to the write-behind costs the caller, with a
   copy (``copy=True``: the only option on eviction, since the evicting store overwrites the
   block right away) and without (``copy=False``: possible on store, where the block stays
   readable until the tier releases it), against a live ``redis-server``.

    python benches/remote_write_policy.py --cpu-blocks 256 --requests 400
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kvoff import OffloadingManager
from kvoff.bench.workload import WorkloadConfig, block_hashes, generate
from kvoff.remote import RemoteLayout, RemoteTier
from remote_throughput import _Server


class _Instance:
    def __init__(self, cpu_blocks: int, block_size: int) -> None:
        self.manager = OffloadingManager(cpu_blocks, block_size=block_size)
        self.block_size = block_size
        self.served = {"cpu": 0, "remote": 0, "computed": 0}

    def step(
        self, prompt_tokens: int, names: list[bytes], remote: set[bytes]
    ) -> tuple[list[bytes], list[bytes]]:
        """Serve one request whose finished KV covers ``names``: count where its prompt blocks
        come from, then store them all. Returns (newly stored, evicted) hashes."""
        usable = max(prompt_tokens - 1, 0) // self.block_size
        want = names[:usable]
        cpu = self.manager.lookup(want)
        rem = 0
        while cpu + rem < len(want) and want[cpu + rem] in remote:
            rem += 1
        self.served["cpu"] += cpu
        self.served["remote"] += rem
        self.served["computed"] += len(want) - cpu - rem
        out = self.manager.prepare_store(names)
        if out is None:
            return [], []
        stored = list(out.block_hashes_to_store)
        self.manager.complete_store(stored)
        return stored, list(out.block_hashes_evicted)


def sharing(cfg: WorkloadConfig, requests: int, lag: int, cpu_blocks: int, bs: int) -> None:
    reqs = list(generate(cfg, requests, seed=7))
    print(
        f"workload: {requests} requests per instance, CPU tier {cpu_blocks} blocks of {bs} "
        f"tokens each, B starts {lag} requests after A"
    )
    print(
        "| policy | blocks sent | sync copies on the step "
        "| B from CPU | B from remote | B computed |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for policy in ("store", "evict"):
        remote: set[bytes] = set()
        a, b = _Instance(cpu_blocks, bs), _Instance(cpu_blocks, bs)
        sent = sync_copies = 0
        order = [(a, r) for r in reqs[:lag]]
        for i in range(lag, requests + lag):
            if i < requests:
                order.append((a, reqs[i]))
            order.append((b, reqs[i - lag]))
        for inst, r in order:
            names = block_hashes(np.concatenate([r.prompt, r.output]), bs)
            stored, evicted = inst.step(len(r.prompt), names, remote)
            new = [h for h in (stored if policy == "store" else evicted) if h not in remote]
            sent += len(new)
            if policy == "evict":
                sync_copies += len(new)
            remote.update(new)
        total = sum(b.served.values())
        cells = [
            f"{b.served[k]} ({100 * b.served[k] / total:.0f}%)"
            for k in ("cpu", "remote", "computed")
        ]
        print(f"| on {policy} | {sent} | {sync_copies} | " + " | ".join(cells) + " |")


def enqueue_cost(block_mib: float, n: int) -> None:
    size = int(block_mib * (1 << 20))
    blocks = [torch.randint(0, 256, (size,), dtype=torch.uint8) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        server = _Server(Path(tmp))
        try:
            layout = RemoteLayout(
                model="policy", dtype="bfloat16", layout="cross_layer", block_bytes=size,
                cpu_block_size=16, gpu_block_size=16,
            )  # fmt: skip
            rows = []
            for copy in (True, False):
                server.flush()
                with RemoteTier(
                    f"redis://127.0.0.1:{server.port}/0?timeout=30", layout, lookup=False,
                    fetch=False, max_queue_blocks=n, max_queue_bytes=n * (size + 64),
                ) as tier:  # fmt: skip
                    assert tier.writer is not None
                    times = []
                    for i, blk in enumerate(blocks):
                        began = time.perf_counter()
                        tier.writer.enqueue(i.to_bytes(8, "big"), blk, copy=copy)
                        times.append(time.perf_counter() - began)
                    tier.writer.flush(600)
                rows.append((copy, statistics.median(times), max(times)))
        finally:
            server.stop()
    print(
        f"\nstep-thread cost of enqueue, {size} B blocks, {n} blocks, redis-server {server.version}"
    )
    print("| enqueue | median | max | GB/s (median) |")
    print("|---|---:|---:|---:|")
    for copy, med, worst in rows:
        label = "copy=True (on eviction: must copy)" if copy else "copy=False (on store: borrow)"
        print(f"| {label} | {med * 1e6:.0f} us | {worst * 1e6:.0f} us | {size / med / 1e9:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-blocks", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=16, help="tokens per CPU block")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--lag", type=int, default=100)
    ap.add_argument("--block-mib", type=float, default=2.0)
    ap.add_argument("--enqueues", type=int, default=48)
    args = ap.parse_args(argv)
    sharing(WorkloadConfig(), args.requests, args.lag, args.cpu_blocks, args.block_size)
    enqueue_cost(args.block_mib, args.enqueues)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
