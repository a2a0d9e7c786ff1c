"""CPU⇄GPU transfer benchmark (needs CUDA): the link's limit, the naive loop, and kvoff.

For each chunk size (the bytes of one block of one layer's K or V), a 128 MiB job of random GPU
block ids (out of a pool 4x larger) against consecutive CPU blocks, bf16, ``kv_split`` layout:

- ``single copy``: one 128 MiB ``copy_`` between a device buffer and a pinned host buffer: the
  link's limit, measured at the start and at the end of the run (ratios use the better one);
- ``naive loop``: one ``copy_`` per block, per layer, per K/V into a pinned host tensor;
- ``kvoff``: ``CpuGpuTransfer`` (Triton gather into staging, a few large DMAs, double-buffered).

Each is run per direction and with both directions at once (a store and a load of different
blocks). Times are CUDA events (kvoff: the ``transfer_time`` it reports), with the work issued
while the compute stream is parked in a 2 ms sleep, as an engine issues it behind a step's
kernels, so host issue time does not stretch the device timeline; extra columns give kvoff
issued on an idle GPU ("idle"), the wall time of submitting both directions and waiting ("both
wall") and the host time ``transfer_async`` takes ("issue us"). Medians of ``--reps`` runs after
warm-up. Also measured: how long allocating and pinning the CPU tier takes per GiB, chunked
(as kvoff does) and as one allocation.

    python benches/gpu_transfer.py --out "$OUT"      # prints a table, writes gpu_transfer.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kvoff.transfer import CpuGpuTransfer
from kvoff.transfer.cpu_tier import CpuTier

MiB = 1 << 20
GiB = 1 << 30
JOB_BYTES = 128 * MiB
# (chunk bytes, layers, blocks per job): every job is 128 MiB.
CONFIGS = [(4 << 10, 32, 512), (32 << 10, 32, 64), (2 << 20, 8, 4)]


def _events_ms(fn: Callable[[torch.cuda.Stream], object], stream: torch.cuda.Stream) -> float:
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record(stream)
    with torch.cuda.stream(stream):
        fn(stream)
    end.record(stream)
    end.synchronize()
    return float(start.elapsed_time(end))


def _median(fn: Callable[[], float], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(fn() for _ in range(reps))


def single_copy(reps: int) -> dict[str, float]:
    dev = torch.empty(JOB_BYTES, dtype=torch.uint8, device="cuda")
    dev2 = torch.empty(JOB_BYTES, dtype=torch.uint8, device="cuda")
    host = torch.empty(JOB_BYTES, dtype=torch.uint8, pin_memory=True)
    host2 = torch.empty(JOB_BYTES, dtype=torch.uint8, pin_memory=True)
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def one_way(dst: torch.Tensor, src: torch.Tensor) -> float:
        compute = _behind_sleep()
        e0 = compute.record_event(torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
        s1.wait_stream(compute)
        with torch.cuda.stream(s1):
            dst.copy_(src, non_blocking=True)
        e1 = s1.record_event(torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
        e1.synchronize()
        return float(e0.elapsed_time(e1)) / 1e3

    def d2h() -> float:
        return one_way(host, dev)

    def h2d() -> float:
        return one_way(dev, host)

    def both() -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.cuda.stream(s1):
            host.copy_(dev, non_blocking=True)
        with torch.cuda.stream(s2):
            dev2.copy_(host2, non_blocking=True)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def both_dev(pieces: int = 1) -> float:
        compute = _behind_sleep()
        e0 = compute.record_event(torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
        ends = []
        step = JOB_BYTES // pieces
        for s, dst, src in ((s1, host, dev), (s2, dev2, host2)):
            s.wait_stream(compute)
            with torch.cuda.stream(s):
                for p in range(0, JOB_BYTES, step):
                    dst[p : p + step].copy_(src[p : p + step], non_blocking=True)
            ends.append(s.record_event(torch.cuda.Event(enable_timing=True)))  # type: ignore[no-untyped-call]
        torch.cuda.synchronize()
        return float(max(e0.elapsed_time(e) for e in ends)) / 1e3

    return {
        "store": JOB_BYTES / _median(d2h, reps),
        "load": JOB_BYTES / _median(h2d, reps),
        "both": 2 * JOB_BYTES / _median(both, reps),
        "both_dev": 2 * JOB_BYTES / _median(both_dev, reps),
        "both_dev_4_pieces": 2 * JOB_BYTES / _median(lambda: both_dev(4), reps),
    }


def _behind_sleep() -> torch.cuda.Stream:
    """Park the compute stream for ~2 ms so work issued next starts together on the device,
    whatever the host takes to issue it; returns the compute stream."""
    torch.cuda.synchronize()
    torch.cuda._sleep(4_000_000)  # type: ignore[no-untyped-call]
    return torch.cuda.current_stream()


def _make_kv(layers: int, pool: int, chunk: int) -> list[torch.Tensor]:
    elems = chunk // 2
    return [torch.randn(2, pool, elems, dtype=torch.bfloat16, device="cuda") for _ in range(layers)]


def naive(kv: list[torch.Tensor], gpu_ids: list[int], reps: int) -> dict[str, float]:
    layers, n = len(kv), len(gpu_ids)
    elems = kv[0].shape[-1]
    host = torch.empty(n, layers, 2, elems, dtype=torch.bfloat16, pin_memory=True)
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def store(s: torch.cuda.Stream) -> None:
        with torch.cuda.stream(s):
            for i, g in enumerate(gpu_ids):
                for layer, t in enumerate(kv):
                    for k in (0, 1):
                        host[i, layer, k].copy_(t[k, g], non_blocking=True)

    def load(s: torch.cuda.Stream) -> None:
        with torch.cuda.stream(s):
            for i, g in enumerate(gpu_ids):
                for layer, t in enumerate(kv):
                    for k in (0, 1):
                        t[k, g].copy_(host[i, layer, k], non_blocking=True)

    size = n * layers * 2 * elems * 2
    r = max(2, reps // 4)  # host-bound and slow: fewer repetitions
    return {
        "store": size / _median(lambda: _events_ms(store, stream) / 1e3, r, warmup=1),
        "load": size / _median(lambda: _events_ms(load, stream) / 1e3, r, warmup=1),
    }


def kvoff_rates(
    kv: list[torch.Tensor], gpu_ids: list[int], reps: int, *, staging: int, random_cpu: bool
) -> dict[str, float]:
    n = len(gpu_ids)
    t = CpuGpuTransfer(kv, 16, 16, 2 * n, layout="kv_split", staging_bytes=staging)
    assert t.copier == "triton", t.copier
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(2 * n, generator=gen).tolist() if random_cpu else list(range(2 * n))
    store_cpu, load_cpu = order[:n], order[n:]
    load_gpu = gpu_ids[::-1]
    job = iter(range(1 << 40))

    def one(direction: str, cpu: list[int], gpu: list[int], behind: bool = True) -> float:
        # behind=True: issued while the compute stream is busy (as an engine does), so the
        # job's device time is not stretched by the host issuing it; False: on an idle GPU.
        if behind:
            _behind_sleep()
        jid = next(job)
        t.transfer_async(jid, direction, gpu, cpu)
        (res,) = t.wait([jid])
        assert res.success and res.transfer_size == JOB_BYTES
        return float(res.transfer_time)

    def both() -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a, b = next(job), next(job)
        t.transfer_async(a, "GPU_to_CPU", gpu_ids, store_cpu)
        t.transfer_async(b, "CPU_to_GPU", load_gpu, load_cpu)
        results = t.wait([a, b])
        assert all(r.success for r in results)
        return time.perf_counter() - t0

    def both_dev() -> float:
        # Both jobs wait for the compute stream, so both start when the sleep ends; the span
        # is then the longer of the two device-timed jobs.
        _behind_sleep()
        a, b = next(job), next(job)
        t.transfer_async(a, "GPU_to_CPU", gpu_ids, store_cpu)
        t.transfer_async(b, "CPU_to_GPU", load_gpu, load_cpu)
        results = t.wait([a, b])
        assert all(r.success for r in results)
        return float(max(r.transfer_time for r in results))

    def store_wall() -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        one("GPU_to_CPU", store_cpu, gpu_ids)
        return time.perf_counter() - t0

    def host_issue() -> float:
        _behind_sleep()
        jid = next(job)
        t0 = time.perf_counter()
        t.transfer_async(jid, "GPU_to_CPU", gpu_ids, store_cpu)
        issued = time.perf_counter() - t0
        t.wait([jid])
        return issued

    return {
        "store": JOB_BYTES / _median(lambda: one("GPU_to_CPU", store_cpu, gpu_ids), reps),
        "load": JOB_BYTES / _median(lambda: one("CPU_to_GPU", load_cpu, load_gpu), reps),
        "both": 2 * JOB_BYTES / _median(both, reps),
        "both_dev": 2 * JOB_BYTES / _median(both_dev, reps),
        "store_wall": JOB_BYTES / _median(store_wall, reps),
        "store_idle": JOB_BYTES
        / _median(lambda: one("GPU_to_CPU", store_cpu, gpu_ids, False), reps),
        "load_idle": JOB_BYTES
        / _median(lambda: one("CPU_to_GPU", load_cpu, load_gpu, False), reps),
        "host_issue_s": _median(host_issue, reps),
    }


def pinning_cost(gib: int) -> dict[str, float]:
    chunked = CpuTier(gib * GiB // MiB, MiB, pin=True, chunk_bytes=256 * MiB)
    mean_call = chunked.alloc_seconds / len(chunked.chunks)
    seconds_chunked = chunked.alloc_seconds
    del chunked
    t0 = time.perf_counter()
    whole = torch.empty(gib * GiB, dtype=torch.uint8, pin_memory=True)
    seconds_whole = time.perf_counter() - t0
    del whole
    t0 = time.perf_counter()
    pageable = torch.ones(gib * GiB, dtype=torch.uint8)  # touching pages: the unpinned floor
    seconds_touch = time.perf_counter() - t0
    del pageable
    return {
        "gib": gib,
        "chunked_s_per_gib": seconds_chunked / gib,
        "chunked_mean_call_s": mean_call,
        "one_alloc_s_per_gib": seconds_whole / gib,
        "pageable_touch_s_per_gib": seconds_touch / gib,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_transfer.json")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--pin-gib", type=int, default=4)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "job_bytes": JOB_BYTES,
        "rows": [],
    }
    torch.empty(1, device="cuda")  # context creation stays out of the pinning figures
    # First, before any pinned memory is cached by torch's host allocator.
    report["pinning"] = pinning_cost(args.pin_gib)
    # The link's limit is measured at the start and at the end; ratios use the better of the
    # two (and, for both directions, the better of one and four copies per direction), so a
    # slow moment of the shared host cannot flatter kvoff.
    first = single_copy(args.reps)
    rows: list[dict[str, Any]] = report["rows"]
    for chunk, layers, blocks in CONFIGS:
        pool = 4 * blocks
        kv = _make_kv(layers, pool, chunk)
        gen = torch.Generator().manual_seed(chunk)
        gpu_ids = torch.randperm(pool, generator=gen)[:blocks].tolist()
        base = {"chunk_bytes": chunk, "layers": layers, "blocks": blocks}
        rows.append({**base, "method": "naive loop", **naive(kv, gpu_ids, args.reps)})
        variants = [("kvoff", 64 * MiB, False)]
        if chunk == 32 << 10:
            variants += [
                ("kvoff (again: noise)", 64 * MiB, False),
                ("kvoff, random CPU ids", 64 * MiB, True),
                ("kvoff, staging 2x8 MiB", 16 * MiB, False),
                ("kvoff, staging 2x64 MiB", 128 * MiB, False),
            ]
        for name, staging, rnd in variants:
            rates = kvoff_rates(kv, gpu_ids, args.reps, staging=staging, random_cpu=rnd)
            rows.append({**base, "method": name, **rates})
        del kv
        torch.cuda.empty_cache()
    last = single_copy(args.reps)
    link = {k: max(first[k], last[k]) for k in first}
    link["both_dev"] = max(link["both_dev"], link["both_dev_4_pieces"])
    report["single_copy"] = {"first": first, "last": last, "used": link}

    gb = 1e9
    print(f"\n{report['device']}, torch {report['torch']}, 128 MiB jobs, median of {args.reps}")
    for name, m in (("start", first), ("end", last)):
        print(
            f"single copy at {name}: store {m['store'] / gb:.1f}, load {m['load'] / gb:.1f}, "
            f"both {m['both_dev'] / gb:.1f} (4 pieces each way: "
            f"{m['both_dev_4_pieces'] / gb:.1f}) GB/s"
        )
    print(
        f"single copy (link limit): store {link['store'] / gb:.1f} GB/s, "
        f"load {link['load'] / gb:.1f} GB/s, both at once {link['both_dev'] / gb:.1f} GB/s "
        f"(device span; {link['both'] / gb:.1f} wall)"
    )
    head = f"{'chunk':>7} {'layers x blocks':>15}  {'method':<24} {'store GB/s':>10} "
    head += f"{'(x link)':>8} {'load GB/s':>9} {'(x link)':>8} {'both GB/s':>9} {'(x link)':>8}"
    head += f" {'both wall':>9} {'issue us':>8} {'idle st/ld':>11}"
    print(head)
    for r in rows:
        both = f"{'':>9} {'':>8} {'':>9} {'':>8}"
        if "both" in r:
            both = (
                f"{r['both_dev'] / gb:9.1f} {r['both_dev'] / link['both_dev']:8.3f} "
                f"{r['both'] / gb:9.1f} {r['host_issue_s'] * 1e6:8.0f} "
                f"{r['store_idle'] / gb:5.1f}/{r['load_idle'] / gb:5.1f}"
            )
        print(
            f"{r['chunk_bytes'] // 1024:>5}Ki {r['layers']:>6} x {r['blocks']:<6}  "
            f"{r['method']:<24} {r['store'] / gb:10.2f} {r['store'] / link['store']:8.3f} "
            f"{r['load'] / gb:9.2f} {r['load'] / link['load']:8.3f} {both}"
        )
    p = report["pinning"]
    print(
        f"pinning {p['gib']} GiB: chunked {p['chunked_s_per_gib']:.3f} s/GiB "
        f"({p['chunked_mean_call_s'] * 1e3:.0f} ms per 256 MiB call), one allocation "
        f"{p['one_alloc_s_per_gib']:.3f} s/GiB, pageable first touch "
        f"{p['pageable_touch_s_per_gib']:.3f} s/GiB"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_transfer.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
