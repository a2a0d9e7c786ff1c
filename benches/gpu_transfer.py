"""CPU⇄GPU transfers as an engine sees them, each figure against a baseline from the same run.

On CUDA, for 128 MiB jobs (bf16, random GPU block ids out of a pool 4x larger, consecutive CPU
blocks) with one layer's K or V per block of 4 KiB, 32 KiB and 2 MiB, in the ``kv_split``
layout, and the 32 KiB job in the ``canonical`` layout (vLLM's one int8 page tensor per K or V):

- host time inside ``transfer_async``, store and load;
- wall-clock from an idle GPU (``transfer_async`` to ``wait`` returning), store and load,
  against one 128 MiB pinned ``copy_`` timed the same way;
- a store and a load submitted back to back from one thread, wall-clock, against two such
  copies on two streams;
- device time with the work issued behind a busy compute stream (the link's ceiling, as an
  engine issues stores behind a step's kernels), against the single copy's device time;
- the slowdown of a bf16 matmul loop on the compute stream while 1 GiB of stores and 1 GiB of
  loads run, against the same loop alone;
- the CPU tier's start-up: pinning rate, time until a 64 GiB tier allocated in the background
  serves its first store and load, and ``transfer_async``'s host time while pinning goes on.

Without CUDA it measures CPU mode instead: kvoff's store and load on CPU tensors against a
``copy_`` of the same bytes, interleaved, wall-clock and thread CPU time.

    python benches/gpu_transfer.py --out "$OUT"   # JSON + markdown table in $OUT, table printed
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvoff.transfer import CpuGpuTransfer

MiB = 1 << 20
GiB = 1 << 30
JOB_BYTES = 128 * MiB
# (chunk bytes, layers, blocks per job): every job is 128 MiB (layers x K/V x blocks x chunk).
CONFIGS = [(4 << 10, 32, 512), (32 << 10, 32, 64), (2 << 20, 8, 4)]
CAPPED_ROWS = 8  # max_copy_programs of the capped-grid variant
GB = 1e9


def _med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _p(xs: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(xs), q))


# ----------------------------------------------------------------------------- CUDA baselines


def _behind_sleep() -> None:
    """Park the compute stream for ~2 ms so work issued next starts together on the device,
    whatever the host takes to issue it."""
    torch.cuda.synchronize()
    torch.cuda._sleep(4_000_000)  # type: ignore[no-untyped-call]


def _timing_event() -> Any:
    return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]


class SingleCopy:
    """One 128 MiB copy between device memory and pinned host memory: the link's limit."""

    def __init__(self) -> None:
        self.dev = [torch.empty(JOB_BYTES, dtype=torch.uint8, device="cuda") for _ in (0, 1)]
        self.host = [torch.empty(JOB_BYTES, dtype=torch.uint8, pin_memory=True) for _ in (0, 1)]
        self.streams = [torch.cuda.Stream() for _ in (0, 1)]  # type: ignore[no-untyped-call]

    def _pair(self, store: bool, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.host[i], self.dev[i]) if store else (self.dev[i], self.host[i])

    def device_time(self, store: bool) -> float:
        """Seconds on the device, issued behind the compute stream."""
        _behind_sleep()
        compute = torch.cuda.current_stream()
        e0 = _timing_event()
        e0.record(compute)
        s = self.streams[0]
        s.wait_stream(compute)
        dst, src = self._pair(store, 0)
        with torch.cuda.stream(s):
            dst.copy_(src, non_blocking=True)
        e1 = _timing_event()
        e1.record(s)
        e1.synchronize()
        return float(e0.elapsed_time(e1)) / 1e3

    def wall(self, store: bool) -> float:
        """Seconds from an idle GPU to the copy's completion seen by the host."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        s = self.streams[0]
        dst, src = self._pair(store, 0)
        with torch.cuda.stream(s):
            dst.copy_(src, non_blocking=True)
        s.synchronize()
        return time.perf_counter() - t0

    def both_wall(self) -> float:
        """A store and a load at once on two streams, idle GPU to both done."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i, store in ((0, True), (1, False)):
            dst, src = self._pair(store, i)
            with torch.cuda.stream(self.streams[i]):
                dst.copy_(src, non_blocking=True)
        for s in self.streams:
            s.synchronize()
        return time.perf_counter() - t0

    def measure(self, reps: int) -> dict[str, float]:
        out = {}
        steps: tuple[tuple[str, Callable[[], float]], ...] = (
            ("store_dev", lambda: self.device_time(True)),
            ("load_dev", lambda: self.device_time(False)),
            ("store_wall", lambda: self.wall(True)),
            ("load_wall", lambda: self.wall(False)),
            ("both_wall", self.both_wall),
        )
        for name, fn in steps:
            fn()
            out[name] = _med([fn() for _ in range(reps)])
        return out


# ----------------------------------------------------------------------------- kvoff on CUDA


def _kv_split(layers: int, pool: int, chunk: int) -> list[torch.Tensor]:
    elems = chunk // 2
    return [torch.randn(2, pool, elems, dtype=torch.bfloat16, device="cuda") for _ in range(layers)]


def _canonical(kv: list[torch.Tensor]) -> list[torch.Tensor]:
    """What vLLM hands its offloading worker for these caches: each layer's K and V as an int8
    ``[num_blocks, page]`` tensor."""
    return [t[k].view(torch.int8) for t in kv for k in (0, 1)]


class KvoffJobs:
    def __init__(self, gpu_kv: object, layout: str, gpu_ids: list[int], **kwargs: Any) -> None:
        n = len(gpu_ids)
        self.t = CpuGpuTransfer(gpu_kv, 16, 16, 2 * n, layout=layout, **kwargs)
        self.store_ids = (gpu_ids, list(range(n)))
        self.load_ids = (gpu_ids[::-1], list(range(n, 2 * n)))
        self._job = iter(range(1 << 40))
        # Fill the load side once, so loads move real bytes.
        self.run("GPU_to_CPU", gpu_ids, self.load_ids[1])

    def submit(self, direction: str, gpu: list[int], cpu: list[int]) -> int:
        jid = next(self._job)
        self.t.transfer_async(jid, direction, gpu, cpu)
        return jid

    def run(self, direction: str, gpu: list[int], cpu: list[int]) -> Any:
        (res,) = self.t.wait([self.submit(direction, gpu, cpu)])
        assert res.success and res.transfer_size == JOB_BYTES, res
        return res

    def host_us(self, store: bool) -> float:
        torch.cuda.synchronize()
        d, (gpu, cpu) = ("GPU_to_CPU", self.store_ids) if store else ("CPU_to_GPU", self.load_ids)
        jid = next(self._job)
        t0 = time.perf_counter()
        self.t.transfer_async(jid, d, gpu, cpu)
        took = time.perf_counter() - t0
        self.t.wait([jid])
        return took * 1e6

    def wall(self, store: bool) -> float:
        d, (gpu, cpu) = ("GPU_to_CPU", self.store_ids) if store else ("CPU_to_GPU", self.load_ids)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.run(d, gpu, cpu)
        return time.perf_counter() - t0

    def both_wall(self) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a = self.submit("GPU_to_CPU", *self.store_ids)
        b = self.submit("CPU_to_GPU", *self.load_ids)
        results = self.t.wait([a, b])
        took = time.perf_counter() - t0
        assert all(r.success for r in results)
        return took

    def device_time(self, store: bool) -> float:
        _behind_sleep()
        d, (gpu, cpu) = ("GPU_to_CPU", self.store_ids) if store else ("CPU_to_GPU", self.load_ids)
        return float(self.run(d, gpu, cpu).transfer_time)

    def host_us_busy(self, store: bool) -> float:
        """Host time inside transfer_async with the compute stream busy for ~2 ms (anything
        in it that waited for the device would show here, not in host_us)."""
        _behind_sleep()
        d, (gpu, cpu) = ("GPU_to_CPU", self.store_ids) if store else ("CPU_to_GPU", self.load_ids)
        jid = next(self._job)
        t0 = time.perf_counter()
        self.t.transfer_async(jid, d, gpu, cpu)
        took = time.perf_counter() - t0
        self.t.wait([jid])
        return took * 1e6

    def measure(self, reps: int) -> dict[str, Any]:
        out: dict[str, Any] = {"copier": self.t.copier, "paths": self.t.cuda_paths}
        steps: tuple[tuple[str, Callable[[], float]], ...] = (
            ("store_host_us", lambda: self.host_us(True)),
            ("load_host_us", lambda: self.host_us(False)),
            ("store_wall", lambda: self.wall(True)),
            ("load_wall", lambda: self.wall(False)),
            ("both_wall", self.both_wall),
            ("store_dev", lambda: self.device_time(True)),
            ("load_dev", lambda: self.device_time(False)),
            ("store_host_us_busy", lambda: self.host_us_busy(True)),
            ("load_host_us_busy", lambda: self.host_us_busy(False)),
        )
        for name, fn in steps:
            fn()
            xs = [fn() for _ in range(reps)]
            out[name] = _med(xs)
            if name.endswith("_us"):
                out[name + "_p90"] = _p(xs, 0.9)
        return out

    def profile(self, n: int = 50) -> str:
        """Where transfer_async's host time goes (cProfile, store then load)."""
        prof = cProfile.Profile()
        for store in (True, False):
            d, (gpu, cpu) = (
                ("GPU_to_CPU", self.store_ids) if store else ("CPU_to_GPU", self.load_ids)
            )
            for _ in range(n):
                torch.cuda.synchronize()
                jid = next(self._job)
                prof.enable()
                self.t.transfer_async(jid, d, gpu, cpu)
                prof.disable()
                self.t.wait([jid])
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        return buf.getvalue()


def matmul_slowdown(jobs: KvoffJobs, rounds: int = 8, reps: int = 5) -> dict[str, float]:
    """A bf16 matmul loop on the compute stream, alone and while ``rounds`` stores and loads of
    128 MiB each (1 GiB each way) run; compute-stream time from CUDA events."""
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    c = torch.empty_like(a)
    per_round = 2  # matmuls per round: about one 128 MiB transfer's time on an H100/H200

    def loop(with_transfers: bool) -> float:
        torch.cuda.synchronize()
        compute = torch.cuda.current_stream()
        e0, e1 = _timing_event(), _timing_event()
        e0.record(compute)
        pending = []
        for _ in range(rounds):
            if with_transfers:  # they wait only for the matmuls queued so far
                pending.append(jobs.submit("GPU_to_CPU", *jobs.store_ids))
                pending.append(jobs.submit("CPU_to_GPU", *jobs.load_ids))
            for _ in range(per_round):
                torch.matmul(a, b, out=c)
        e1.record(compute)
        e1.synchronize()
        if pending:
            assert all(r.success for r in jobs.t.wait(pending))
        return float(e0.elapsed_time(e1)) / 1e3

    loop(False)
    loop(True)
    alone = [loop(False) for _ in range(reps)]
    shared = [loop(True) for _ in range(reps)]
    tflop = 2 * 8192**3 * per_round * rounds / 1e12
    return {
        "alone_s": _med(alone),
        "with_transfers_s": _med(shared),
        "slowdown": _med(shared) / _med(alone) - 1,
        "matmul_tflops_alone": tflop / _med(alone),
    }


def startup(gib: int, pin_gib: int, method: str, chunk_mib: int) -> dict[str, Any]:
    """A ``gib`` GiB tier allocated in the background, pinned by ``method`` in chunks of
    ``chunk_mib``: time until its first store and load are done, transfer_async's host time
    while pinning goes on, and the pinning rate over the first ``pin_gib`` GiB."""
    slot = 2 * MiB  # llama-3-8b: 16 tokens x 32 layers x K/V x 8 heads x 128 x bf16
    kv = _kv_split(32, 64, 32 << 10)
    # Compile the kernels first, as an engine restarted with Triton's cache on disk finds them.
    t0 = time.perf_counter()
    warm = CpuGpuTransfer(kv, 16, 64, 1, layout="kv_split")
    cold = time.perf_counter() - t0
    del warm
    began = time.perf_counter()
    t = CpuGpuTransfer(
        kv,
        16,
        64,
        gib * GiB // (4 * slot),
        layout="kv_split",
        alloc_in_background=True,
        pin_method=method,
        pin_chunk_bytes=chunk_mib * MiB,
    )
    try:
        return _startup_figures(t, began, cold, gib, pin_gib, method, chunk_mib, slot)
    finally:
        t._tier.close()  # whatever happened, stop pinning: later figures must not share the host


def _startup_figures(
    t: CpuGpuTransfer,
    began: float,
    cold: float,
    gib: int,
    pin_gib: int,
    method: str,
    chunk_mib: int,
    slot: int,
) -> dict[str, Any]:
    constructed = time.perf_counter() - began
    t.wait_cpu_blocks(16)
    ready = time.perf_counter() - began
    t.transfer_async(0, "GPU_to_CPU", list(range(64)), list(range(16)))
    t.transfer_async(1, "CPU_to_GPU", list(range(64)), list(range(16)))
    assert all(r.success for r in t.wait([0, 1]))
    served = time.perf_counter() - began
    # Host time of 128 MiB stores while the background thread pins (into blocks 16..31).
    t.wait_cpu_blocks(32)
    host = []
    for k in range(20):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        t.transfer_async(10 + k, "GPU_to_CPU", list(range(64)), list(range(16, 32)))
        host.append((time.perf_counter() - t0) * 1e6)
        t.wait([10 + k])
    t.wait_cpu_blocks(pin_gib * GiB // (4 * slot))
    elapsed = time.perf_counter() - began
    pinned_bytes = t.ready_cpu_blocks * t.cpu_block_bytes
    numa = t.cpu_numa_node
    return {
        "method": method,
        "chunk_mib": chunk_mib,
        "tier_gib": gib,
        "cold_construct_1_block_s": cold,
        "construct_s": constructed,
        "first_blocks_ready_s": ready,
        "first_store_and_load_done_s": served,
        "host_us_while_pinning": _med(host),
        "host_us_while_pinning_max": max(host),
        "pinned_gib_measured": pinned_bytes / GiB,
        "pin_gib_per_s": pinned_bytes / GiB / elapsed,
        "numa_node": numa,
    }


def _guarded(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one section; a failure is recorded in the report (and printed), not fatal, so one
    device call still brings back everything else."""
    try:
        result = fn()
    except Exception:
        report.setdefault("errors", {})[name] = traceback.format_exc()
        print(f"section {name} failed:\n{report['errors'][name]}", file=sys.stderr, flush=True)
        return None
    if not name.startswith(("setup_", "row_")):  # rows go in report["rows"]
        report[name] = result
    print(f"measured {name}", file=sys.stderr, flush=True)
    return result


def cuda_main(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "mode": "cuda",
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "job_bytes": JOB_BYTES,
        "reps": args.reps,
    }
    torch.empty(1, device="cuda")  # context creation stays out of the start-up figures
    for method, chunk_mib in () if args.no_startup else (("alloc", 256), ("register", 32)):
        _guarded(
            report,
            f"startup_{method}",
            partial(startup, args.tier_gib, args.pin_gib, method, chunk_mib),
        )
        torch.cuda.empty_cache()
    link = SingleCopy()
    first = link.measure(args.reps)
    rows: list[dict[str, Any]] = []
    report["rows"] = rows
    for chunk, layers, blocks in CONFIGS:
        pool = 4 * blocks
        kv = _kv_split(layers, pool, chunk)
        gen = torch.Generator().manual_seed(chunk)
        gpu_ids = torch.randperm(pool, generator=gen)[:blocks].tolist()
        base = {"chunk_bytes": chunk, "layers": layers, "blocks": blocks}
        variants: list[tuple[str, object]] = [("kv_split", kv)]
        if chunk == 32 << 10:
            variants.append(("canonical", _canonical(kv)))
        for layout, gpu_kv in variants:
            jobs = _guarded(
                report,
                f"setup_{chunk >> 10}KiB_{layout}",
                partial(KvoffJobs, gpu_kv, layout, gpu_ids),
            )
            if jobs is None:
                continue
            row = _guarded(
                report, f"row_{chunk >> 10}KiB_{layout}", partial(jobs.measure, args.reps)
            )
            if row is not None:
                rows.append({**base, "layout": layout, **row})
            if chunk == 32 << 10 and layout == "kv_split":
                _guarded(report, "profile_32KiB", jobs.profile)
                _guarded(report, "matmul", partial(matmul_slowdown, jobs))
        if chunk == 32 << 10:
            # The copy kernels' grid capped: fewer SMs held beside compute, for longer.
            name = f"kv_split, grid capped at {CAPPED_ROWS} rows"
            capped = _guarded(
                report,
                "setup_capped",
                partial(KvoffJobs, kv, "kv_split", gpu_ids, max_copy_programs=CAPPED_ROWS),
            )
            if capped is not None:
                row = _guarded(report, "row_capped", partial(capped.measure, args.reps))
                if row is not None:
                    rows.append({**base, "layout": name, **row})
                _guarded(report, "matmul_capped", partial(matmul_slowdown, capped))
        torch.cuda.empty_cache()
    last = link.measure(args.reps)
    # Ratios use the better link figure of the two (a slow moment cannot flatter kvoff).
    best = {k: min(first[k], last[k]) for k in first}
    report["single_copy"] = {"first": first, "last": last, "used": best}
    return report


# ----------------------------------------------------------------------------- CPU mode


def _copy_threads(n: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def copy(dst: torch.Tensor, src: torch.Tensor) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            dst.copy_(src)
        finally:
            torch.set_num_threads(before)

    return copy


def cpu_main(args: argparse.Namespace) -> dict[str, Any]:
    """kvoff's CPU mode against copy_ of the same bytes (64 MiB, contiguous), interleaved round
    by round. The baseline is the faster of copy_ with torch's default threads and with one
    (on a small shared machine one is faster; elsewhere the default may be)."""
    report: dict[str, Any] = {
        "mode": "cpu",
        "device": "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "rows": [],
    }
    nbytes = 64 * MiB
    copies = {"copy": _copy_threads(torch.get_num_threads()), "copy1": _copy_threads(1)}
    # `kvoff bench`'s default shape (preset small: 8 layers, 4 KV heads x 64, bf16, 16-token
    # GPU blocks, so 8 KiB per K or V; 64-token CPU blocks) and the GPU table's 32 KiB chunks
    # (CPU block = GPU block); random GPU ids out of a pool 4x larger.
    shapes = (("small preset", 8, 8 << 10, 4), ("32 KiB chunks", 32, 32 << 10, 1))
    src = torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    dst = torch.empty(nbytes, dtype=torch.uint8).fill_(2)
    for name, layers, chunk, ratio in shapes:
        n = nbytes // (layers * 2 * chunk)  # GPU blocks per job
        m = n // ratio  # CPU blocks per job
        pool = 4 * n
        kv = [torch.randn(2, pool, chunk // 2, dtype=torch.bfloat16) for _ in range(layers)]
        t = CpuGpuTransfer(kv, 16, 16 * ratio, 4 * m, layout="kv_split")
        rng = np.random.default_rng(0)
        for cpu_ids in ("consecutive", "random"):
            wall: dict[str, list[float]] = {k: [] for k in ("store", "load", "copy", "copy1")}
            job = 0
            for r in range(args.reps + 2):
                gpu = rng.permutation(pool)[:n]
                if cpu_ids == "consecutive":
                    cpu = np.arange(m) + m * (r % 4)
                else:
                    cpu = rng.permutation(4 * m)[:m]
                for what in ("store", "copy", "load", "copy1"):
                    t0 = time.perf_counter()
                    if what in copies:
                        copies[what](dst, src)
                    else:
                        d = "GPU_to_CPU" if what == "store" else "CPU_to_GPU"
                        t.transfer_async(job, d, gpu, cpu)
                        assert t.wait([job])[0].success
                        job += 1
                    if r >= 2:  # two warm-up rounds
                        wall[what].append(time.perf_counter() - t0)
            row: dict[str, Any] = {"shape": name, "cpu_ids": cpu_ids, "job_bytes": nbytes}
            for what, xs in wall.items():
                row[f"{what}_GBps"] = nbytes / _med(xs) / GB
                row[f"{what}_p50_ms"] = _med(xs) * 1e3
                row[f"{what}_p99_ms"] = _p(xs, 0.99) * 1e3
            row["baseline_GBps"] = max(row["copy_GBps"], row["copy1_GBps"])
            report["rows"].append(row)
            print(f"measured {name}, {cpu_ids} CPU ids", file=sys.stderr, flush=True)
        del t, kv
    return report


# ----------------------------------------------------------------------------- output


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['device']}, torch {report['torch']}"]
    if report["mode"] == "cpu":
        lines += [
            f"(torch threads {report['torch_threads']}; copy_ of 64 MiB with them and with one, "
            "the faster is the baseline)",
            "",
            "| shape | CPU ids | store GB/s | x copy_ | load GB/s | x copy_ | copy_ GB/s (default "
            "threads, one) | store p50 / p99 ms | load p50 / p99 ms |",
            "|---|---|---:|---:|---:|---:|---|---|---|",
        ]
        for r in report["rows"]:
            c = r["baseline_GBps"]
            lines.append(
                f"| {r['shape']} | {r['cpu_ids']} | {r['store_GBps']:.2f} | "
                f"{r['store_GBps'] / c:.2f} | {r['load_GBps']:.2f} | {r['load_GBps'] / c:.2f} | "
                f"{r['copy_GBps']:.2f}, {r['copy1_GBps']:.2f} | "
                f"{r['store_p50_ms']:.1f} / {r['store_p99_ms']:.1f} | "
                f"{r['load_p50_ms']:.1f} / {r['load_p99_ms']:.1f} |"
            )
        return "\n".join(lines) + "\n"
    link = report["single_copy"]["used"]
    lines += [
        "",
        f"single copy (128 MiB, pinned): store {JOB_BYTES / link['store_wall'] / GB:.1f} GB/s, "
        f"load {JOB_BYTES / link['load_wall'] / GB:.1f} GB/s wall-clock from idle; "
        f"both at once {2 * JOB_BYTES / link['both_wall'] / GB:.1f} GB/s; device time store "
        f"{JOB_BYTES / link['store_dev'] / GB:.1f}, load {JOB_BYTES / link['load_dev'] / GB:.1f}",
        "",
        "| chunk | layers x blocks | layout | host us store / load (GPU busy) "
        "| idle store GB/s (x copy) | idle load GB/s (x copy) "
        "| back-to-back GB/s (x 2 copies) | behind compute store, load (x copy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        st, ld = JOB_BYTES / r["store_wall"], JOB_BYTES / r["load_wall"]
        both = 2 * JOB_BYTES / r["both_wall"]
        lines.append(
            f"| {r['chunk_bytes'] // 1024} KiB | {r['layers']} x {r['blocks']} | {r['layout']} "
            f"| {r['store_host_us']:.0f} / {r['load_host_us']:.0f} "
            f"({r['store_host_us_busy']:.0f} / {r['load_host_us_busy']:.0f}) "
            f"| {st / GB:.1f} ({link['store_wall'] / r['store_wall']:.3f}) "
            f"| {ld / GB:.1f} ({link['load_wall'] / r['load_wall']:.3f}) "
            f"| {both / GB:.1f} ({link['both_wall'] / r['both_wall']:.3f}) "
            f"| {link['store_dev'] / r['store_dev']:.3f}, {link['load_dev'] / r['load_dev']:.3f} |"
        )
    for key in ("matmul", "matmul_capped"):
        m = report.get(key)
        if m:
            lines.append(
                f"{key}: slowdown of a bf16 matmul loop while 1 GiB of stores and 1 GiB of loads "
                f"run: {100 * m['slowdown']:.2f}% ({m['alone_s'] * 1e3:.1f} ms alone, "
                f"{m['with_transfers_s'] * 1e3:.1f} ms with; {m['matmul_tflops_alone']:.0f} "
                "TFLOP/s alone)"
            )
    for key in ("startup_alloc", "startup_register"):
        st = report.get(key)
        if st:
            lines.append(
                f"{key} ({st['chunk_mib']} MiB chunks), {st['tier_gib']} GiB tier in the "
                f"background: first blocks ready {st['first_blocks_ready_s']:.3f} s, first "
                f"store+load done {st['first_store_and_load_done_s']:.3f} s; pinning "
                f"{st['pin_gib_per_s']:.2f} GiB/s; host us per 128 MiB store while pinning "
                f"{st['host_us_while_pinning']:.0f} (max {st['host_us_while_pinning_max']:.0f}); "
                f"NUMA node {st['numa_node']}"
            )
    if report.get("rows"):
        lines.append(f"paths: {report['rows'][0].get('paths')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON and table")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tier-gib", type=int, default=64, help="start-up: tier size")
    ap.add_argument("--pin-gib", type=int, default=4, help="start-up: GiB to pin for the rate")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up section")
    ap.add_argument("--cpu", action="store_true", help="CPU mode even where CUDA is present")
    args = ap.parse_args(argv)
    use_cuda = torch.cuda.is_available() and not args.cpu
    if not use_cuda:
        print("no CUDA device: measuring CPU mode", file=sys.stderr)
    report = cuda_main(args) if use_cuda else cpu_main(args)
    table = markdown(report)
    print(table)
    if use_cuda:
        print(report.get("profile_32KiB", ""))
        for name, err in report.get("errors", {}).items():
            print(f"section {name} failed:\n{err}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_transfer.json").write_text(json.dumps(report, indent=2))
        (args.out / "gpu_transfer.md").write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
