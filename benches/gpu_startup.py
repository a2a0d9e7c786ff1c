"""Start-up and the growing tier on a GPU: pinning rate, what a transfer waits while the tier is
being pinned, and time to the first served step with a large tier.

Sections (each one guarded: a failure is recorded in the JSON and the others still run):

- ``pin_rate``: GiB/s of pinning ``--rate-gib`` GiB up front, per pin method (``alloc``:
  ``cudaHostAlloc`` through torch; ``register``: zero-filled pageable memory, then
  ``cudaHostRegister``) and chunk size; a chunk's pinning time follows from it;
- ``wait_while_pinning``: per method and chunk size, the wall-clock of a 32 MiB store and of a
  32 MiB load (``transfer_async`` to ``wait`` returning) submitted while a ``--wait-gib`` GiB
  tier is pinned in the background, against the same transfers once it is whole (idle). The
  pinning call holds the CUDA driver's lock, so a transfer's copies and kernel wait for the
  chunk in progress: the excess over idle should stay under about one chunk's pinning time;
- ``first_served_step``: the connector as an engine runs it (manager with ``usable_blocks=0``,
  scheduler, worker, ``CpuGpuTransfer(alloc_in_background=True)`` of ``--tier-gib`` GiB):
  seconds from construction to the end of the first step that stored into the tier, and to
  the whole tier, with the pinning rate and the usable capacity seen at each step (target: first
  served step under 1 s for 64 GiB);
- ``bench`` (with ``--bench``, run first): ``kvoff bench --preset llama-3-8b --cpu-gb
  <tier-gib>`` with the tier pinned in the background, its ``startup`` section and
  per-direction figures.

Without CUDA it runs the same sections on CPU tensors (the tier zero-filled, not pinned), for
checking the script itself (use small sizes).

    python benches/gpu_startup.py "$OUT/gpu_startup.json"                   # the lead's run
    python benches/gpu_startup.py /tmp/s.json --tier-gib 1 --wait-gib 1 --rate-gib 1   # CPU check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvoff import JobTracker, OffloadingManager
from kvoff.connector import OffloadingScheduler, OffloadingWorker, RequestStep
from kvoff.transfer import CpuGpuTransfer
from kvoff.transfer.cpu_tier import CpuTier

MiB, GiB = 1 << 20, 1 << 30
LAYERS, POOL, ROW = 32, 64, 32 << 10  # llama-3-8b-like: a 2 MiB GPU block (all layers, K/V)
GBS, CBS = 16, 64  # tokens per GPU / CPU block: a CPU block is 8 MiB
JOB_GPU_BLOCKS = 16  # 32 MiB per transfer


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _kv() -> list[torch.Tensor]:
    heads_dim = ROW // (GBS * 2)  # bf16 elements per token per layer
    return [
        torch.randn((2, POOL, GBS, heads_dim), device=_device()).to(torch.bfloat16)
        for _ in range(LAYERS)
    ]


def _release_host_cache() -> None:
    """Freed pinned tensors stay in torch's host cache: give them back before the next tier."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        empty = getattr(torch._C, "_host_emptyCache", None)
        if empty is not None:
            empty()


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {
        "n": len(xs),
        "p50_ms": float(np.percentile(a, 50) * 1e3),
        "p90_ms": float(np.percentile(a, 90) * 1e3),
        "p99_ms": float(np.percentile(a, 99) * 1e3),
        "max_ms": float(a.max() * 1e3),
        "mean_ms": float(a.mean() * 1e3),
    }


def pin_rate(gib: float, methods: list[str], chunks_mib: list[int]) -> list[dict[str, Any]]:
    rows = []
    block = 8 * MiB
    for method in methods:
        for chunk in chunks_mib:
            t0 = time.perf_counter()
            tier = CpuTier(
                int(gib * GiB) // block,
                block,
                pin=torch.cuda.is_available(),
                chunk_bytes=chunk * MiB,
                device=_device() if torch.cuda.is_available() else None,
                pin_method=method,
            )
            seconds = time.perf_counter() - t0
            rate = tier.nbytes / GiB / seconds
            rows.append(
                {
                    "method": method,
                    "chunk_mib": chunk,
                    "gib": tier.nbytes / GiB,
                    "seconds": seconds,
                    "gib_per_s": rate,
                    "ms_per_chunk": chunk / 1024 / rate * 1e3,
                }
            )
            print(f"pin {method} {chunk} MiB chunks: {rate:.2f} GiB/s", file=sys.stderr)
            del tier
            _release_host_cache()
    return rows


def _timed_jobs(
    t: CpuGpuTransfer, first_cpu: int, n: int, jid: list[int]
) -> dict[str, list[float]]:
    """``n`` stores then loads of 32 MiB each (wall-clock, and host time of transfer_async)."""
    cpu_blocks = JOB_GPU_BLOCKS // t.gpu_blocks_per_cpu_block
    out: dict[str, list[float]] = {"store": [], "load": [], "store_host": [], "load_host": []}
    for k in range(n):
        cpu = list(range(first_cpu + k % 4 * cpu_blocks, first_cpu + (k % 4 + 1) * cpu_blocks))
        gpu = list(np.random.default_rng(k).choice(POOL, JOB_GPU_BLOCKS, replace=False))
        for name, direction in (("store", "GPU_to_CPU"), ("load", "CPU_to_GPU")):
            jid[0] += 1
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            t.transfer_async(jid[0], direction, gpu, cpu)
            t1 = time.perf_counter()
            (r,) = t.wait([jid[0]])
            t2 = time.perf_counter()
            assert r.success, f"{direction} failed"
            out[name].append(t2 - t0)
            out[f"{name}_host"].append(t1 - t0)
    return out


def wait_while_pinning(
    gib: float, methods: list[str], chunks_mib: list[int], reps: int
) -> list[dict[str, Any]]:
    rows = []
    kv = _kv()
    for method in methods:
        for chunk in chunks_mib:
            began = time.perf_counter()
            t = CpuGpuTransfer(
                kv, GBS, CBS, int(gib * GiB) // (8 * MiB), layout="kv_split",
                alloc_in_background=True, pin_method=method, pin_chunk_bytes=chunk * MiB,
            )  # fmt: skip
            jid = [0]
            need = 4 * JOB_GPU_BLOCKS // t.gpu_blocks_per_cpu_block
            t.wait_cpu_blocks(need)
            first_ready = time.perf_counter() - began
            _timed_jobs(t, 0, 2, jid)  # warm-up (kernel launch paths, events)
            busy: dict[str, list[float]] = {"store": [], "load": [], "store_host": []}
            while t.ready_cpu_blocks < t.num_cpu_blocks and len(busy["store"]) < reps:
                got = _timed_jobs(t, 0, 1, jid)
                for key in busy:
                    busy[key] += got[key]
            whole_during = t.ready_cpu_blocks >= t.num_cpu_blocks
            t.wait_cpu_blocks()
            alloc = t.cpu_alloc_seconds
            idle = _timed_jobs(t, 0, max(reps // 2, 8), jid)
            rate = t.num_cpu_blocks * t.cpu_block_bytes / GiB / alloc if alloc else None
            row = {
                "method": method,
                "chunk_mib": chunk,
                "tier_gib": t.num_cpu_blocks * t.cpu_block_bytes / GiB,
                "first_blocks_ready_s": first_ready,
                "tier_whole_s": alloc,
                "pin_gib_per_s": rate,
                "ms_per_chunk": chunk / 1024 / rate * 1e3 if rate else None,
                "pinning_ended_before_enough_samples": whole_during,
                "store_while_pinning": _stats(busy["store"]) if busy["store"] else None,
                "load_while_pinning": _stats(busy["load"]) if busy["load"] else None,
                "store_host_while_pinning": _stats(busy["store_host"]) if busy["store"] else None,
                "store_idle": _stats(idle["store"]),
                "load_idle": _stats(idle["load"]),
                "store_host_idle": _stats(idle["store_host"]),
            }
            rows.append(row)
            busy_s = _stats(busy["store"]) if busy["store"] else {"p50_ms": 0.0, "max_ms": 0.0}
            print(
                f"wait {method} {chunk} MiB: store p50/max while pinning "
                f"{busy_s['p50_ms']:.2f}/{busy_s['max_ms']:.2f} ms, idle "
                f"{_stats(idle['store'])['p50_ms']:.2f} ms",
                file=sys.stderr,
            )
            del t
            _release_host_cache()
    return rows


def first_served_step(gib: float, max_seconds: float) -> dict[str, Any]:
    """The connector with a growing tier: steps of new requests whose blocks are stored."""
    kv = _kv()
    began = time.perf_counter()
    transfer = CpuGpuTransfer(
        kv, GBS, CBS, int(gib * GiB) // (8 * MiB), layout="kv_split", alloc_in_background=True
    )
    manager = OffloadingManager(transfer.num_cpu_blocks, block_size=CBS, usable_blocks=0)
    sched = OffloadingScheduler(manager, GBS, CBS)
    worker = OffloadingWorker(transfer, JobTracker())
    constructed = time.perf_counter() - began
    sched.update_from_output(worker.get_finished())
    first_step = first_store = None
    steps, stored, usable_seen = 0, 0, []
    rng = np.random.default_rng(0)
    while time.perf_counter() - began < max_seconds:
        steps += 1
        req = f"r{steps}"
        hashes = [int(h) for h in rng.integers(1, 2**62, JOB_GPU_BLOCKS)]
        gpu = [int(g) for g in rng.choice(POOL, JOB_GPU_BLOCKS, replace=False)]
        tokens = GBS * JOB_GPU_BLOCKS + 1
        assert sched.get_num_new_matched_tokens(req, hashes, tokens, 0) == 0
        sched.update_state_after_alloc(req, hashes, gpu, 0, 0)
        meta = sched.build_step([RequestStep(req, hashes, gpu, tokens)])
        worker.start_loads(meta)
        worker.submit_stores(meta)
        ok = 0
        while True:  # the step ends when its store is reported (as a synchronous engine)
            out = worker.get_finished()
            sched.update_from_output(out)
            ok += sum(1 for _, success in out.transfers if success)
            if not sched.num_transfers_in_flight:
                break
            time.sleep(0.0001)
        sched.request_finished(req)
        now = time.perf_counter() - began
        first_step = first_step if first_step is not None else now
        if ok and first_store is None:
            first_store = now
        stored += ok
        usable_seen.append((round(now, 4), sched.usable_cpu_blocks))
        if sched.usable_cpu_blocks == transfer.num_cpu_blocks and first_store is not None:
            break
    alloc = transfer.cpu_alloc_seconds
    tier_bytes = transfer.num_cpu_blocks * transfer.cpu_block_bytes
    result = {
        "tier_gib": tier_bytes / GiB,
        "construct_s": constructed,
        "first_step_s": first_step,
        "first_served_step_s": first_store,
        "first_blocks_ready_s": transfer.cpu_first_ready_seconds,
        "tier_whole_s": alloc,
        "pin_gib_per_s": tier_bytes / GiB / alloc if alloc else None,
        "steps": steps,
        "stores_done": stored,
        "usable_blocks_at_end": sched.usable_cpu_blocks,
        # (seconds, usable blocks) at a few steps: the growth of the capacity gauge.
        "usable_growth": usable_seen[:: max(1, len(usable_seen) // 20)] + usable_seen[-1:],
        "numa_node": transfer.cpu_numa_node,
    }
    del worker, sched, manager, transfer
    _release_host_cache()
    return result


def bench(gib: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "kvoff", "bench", "--preset", "llama-3-8b", "--cpu-gb",
               str(gib), "--gpu-blocks", "4096", "--requests", "600", "--no-progress",
               "--json", str(path)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=560, check=False)
        summary = json.loads(path.read_text()) if path.exists() else None
    return {
        "command": " ".join(cmd[1:]),
        "returncode": run.returncode,
        "stderr_tail": run.stderr[-2000:],
        "startup": summary and summary.get("startup"),
        "transfers": summary and summary.get("transfers"),
        "wall_seconds": summary and summary.get("wall_seconds"),
    }


def _guarded(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception:
        report.setdefault("errors", {})[name] = traceback.format_exc()
        print(f"section {name} failed:\n{report['errors'][name]}", file=sys.stderr, flush=True)
    print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_path", type=Path, help="where to write the JSON report")
    ap.add_argument("--tier-gib", type=float, default=64, help="first_served_step's tier")
    ap.add_argument("--wait-gib", type=float, default=8, help="wait_while_pinning's tier")
    ap.add_argument("--rate-gib", type=float, default=4, help="pin_rate's GiB per case")
    ap.add_argument("--methods", default="alloc,register")
    ap.add_argument("--chunks-mib", default="256,32,8", help="chunk sizes to compare")
    ap.add_argument("--reps", type=int, default=40, help="transfers timed while pinning")
    ap.add_argument("--max-seconds", type=float, default=240, help="first_served_step's bound")
    ap.add_argument("--bench", action="store_true", help="also run kvoff bench on the tier")
    ap.add_argument("--sections", default="pin_rate,wait_while_pinning,first_served_step")
    args = ap.parse_args(argv)
    methods = args.methods.split(",") if torch.cuda.is_available() else ["alloc"]
    chunks = [int(c) for c in args.chunks_mib.split(",")]
    # The bench first: a subprocess with a tier of its own, while this process has pinned
    # nothing yet (freed pinned memory may stay in torch's host cache).
    sections = (["bench"] if args.bench else []) + args.sections.split(",")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    jobs = {
        "pin_rate": lambda: pin_rate(args.rate_gib, methods, chunks),
        "wait_while_pinning": lambda: wait_while_pinning(args.wait_gib, methods, chunks, args.reps),
        "first_served_step": lambda: first_served_step(args.tier_gib, args.max_seconds),
        "bench": lambda: bench(args.tier_gib),
    }
    for name in sections:
        _guarded(report, name, jobs[name])
        # Written after every section: a run cut short still leaves what it measured.
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report, indent=2))
    summary = report.get("first_served_step") or {}
    print(
        json.dumps(
            {k: summary.get(k) for k in ("first_served_step_s", "tier_whole_s", "pin_gib_per_s")}
        )
    )
    return 1 if report.get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
