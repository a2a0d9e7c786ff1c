"""How busy ``kvoff bench`` keeps the link, per direction, from every job's own CUDA events.

``kvoff bench`` reports a direction's rate as its bytes over the sum of its transfers' times.
That is the link's rate for kvoff only if a transfer's time is its own: when a job's timing
starts while the job before it still holds the link, the sum counts that stretch twice. This
script runs the bench in-process, keeps every job's start and end events (none is reused), and
reports per direction: bytes, the sum of the jobs' times, the time the link was busy (the union
of the jobs' intervals) and the overlap between them, each as a rate against the bench's own
link probe.

    python benches/gpu_link_busy.py --out busy.json -- --preset llama-3-8b --cpu-gb 16 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from kvoff import cli
from kvoff.transfer import pipeline

_jobs: list[tuple[bool, int, Any, Any]] = []  # (store, bytes, start event, end event)


def _keep_events() -> None:
    """Every job gets fresh timing events, kept until the end; the jobs are recorded."""
    lane = pipeline.CudaLane

    def timing_event(self: Any) -> Any:
        return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

    def release(self: Any, *events: Any) -> None:
        pass

    enqueue = lane.enqueue

    def recording_enqueue(self: Any, plan: Any, store: bool, *args: Any) -> Any:
        start, end = enqueue(self, plan, store, *args)
        _jobs.append((store, int(plan.nbytes), start, end))
        return start, end

    lane.timing_event = timing_event  # type: ignore[method-assign]
    lane.release = release  # type: ignore[method-assign]
    lane.enqueue = recording_enqueue  # type: ignore[method-assign]


Span = tuple[float, float, int]  # start and end seconds after the reference event, bytes


def _spans(ref: Any, jobs: list[tuple[int, Any, Any]]) -> list[Span]:
    return sorted((ref.elapsed_time(s) / 1e3, ref.elapsed_time(e) / 1e3, b) for b, s, e in jobs)


def _overlaps(span: Span, others: list[Span]) -> bool:
    return any(s < span[1] and span[0] < e for s, e, _ in others)


def _direction(spans: list[Span], other: list[Span], link: float | None) -> dict[str, Any]:
    total = sum(b for _, _, b in spans)
    summed = sum(e - s for s, e, _ in spans)
    busy, reach = 0.0, float("-inf")
    for s, e, _ in spans:
        if e > reach:
            busy += e - max(s, reach)
            reach = e
    out: dict[str, Any] = {
        "jobs": len(spans),
        "bytes": total,
        "sum_of_job_seconds": summed,
        "busy_seconds": busy,
        "overlap_seconds": summed - busy,
        "gb_per_s_over_sum": total / summed / 1e9 if summed else 0.0,
        "gb_per_s_over_busy": total / busy / 1e9 if busy else 0.0,
    }
    # Jobs that ran while the other direction was moving too share the host link both ways.
    alone = [sp for sp in spans if not _overlaps(sp, other)]
    for name, subset in (
        ("alone", alone),
        ("with_other_direction", [x for x in spans if x not in alone]),
    ):
        secs = sum(e - s for s, e, _ in subset)
        out[f"jobs_{name}"] = len(subset)
        out[f"gb_per_s_{name}"] = sum(b for _, _, b in subset) / secs / 1e9 if secs else 0.0
    if link:
        out["link_gb_per_s"] = link
        out["fraction_alone"] = out["gb_per_s_alone"] / link
        out["fraction_with_other_direction"] = out["gb_per_s_with_other_direction"] / link
        out["fraction_over_sum"] = out["gb_per_s_over_sum"] / link
        out["fraction_over_busy"] = out["gb_per_s_over_busy"] / link
    return out


def _both_ways_probe(nbytes: int = 256 << 20, reps: int = 5) -> dict[str, float]:
    """GB/s of each direction while both copy at once (one copy each, two streams), median."""
    host = [torch.empty(nbytes, dtype=torch.uint8, pin_memory=True) for _ in (0, 1)]
    dev = [torch.empty(nbytes, dtype=torch.uint8, device="cuda") for _ in (0, 1)]
    streams = [torch.cuda.Stream() for _ in (0, 1)]  # type: ignore[no-untyped-call]
    rates: dict[str, list[float]] = {"GPU_to_CPU": [], "CPU_to_GPU": []}
    for _ in range(reps + 1):
        torch.cuda.synchronize()
        marks = []
        for (name, dst, src), s in zip(
            (("GPU_to_CPU", host[0], dev[0]), ("CPU_to_GPU", dev[1], host[1])), streams, strict=True
        ):
            e0, e1 = (torch.cuda.Event(enable_timing=True) for _ in (0, 1))  # type: ignore[no-untyped-call]
            with torch.cuda.stream(s):
                e0.record(s)
                dst.copy_(src, non_blocking=True)
                e1.record(s)
            marks.append((name, e0, e1))
        torch.cuda.synchronize()
        for name, e0, e1 in marks:
            rates[name].append(nbytes / (e0.elapsed_time(e1) / 1e3) / 1e9)
    return {k: sorted(v[1:])[reps // 2] for k, v in rates.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    bench_json = args.out.with_suffix(".bench.json")
    _keep_events()
    torch.empty(1, device="cuda")
    ref = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    ref.record()
    rc = cli.main(["bench", *bench_args, "--json", str(bench_json)])
    torch.cuda.synchronize()
    summary = json.loads(bench_json.read_text())
    report: dict[str, Any] = {"bench_exit": rc, "bench_transfers": summary.get("transfers")}
    spans = {
        store: _spans(ref, [(b, s, e) for st, b, s, e in _jobs if st == store])
        for store in (True, False)
    }
    for store, name in ((True, "GPU_to_CPU"), (False, "CPU_to_GPU")):
        link = (summary.get("transfers", {}).get(name) or {}).get("link_gb_per_s")
        report[name] = _direction(spans[store], spans[not store], link)
    report["both_ways_copy_gb_per_s"] = _both_ways_probe()
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True))
    for name in ("GPU_to_CPU", "CPU_to_GPU"):
        r = report[name]
        print(
            f"{name}: {r['jobs']} jobs, {r['bytes'] / 1e9:.2f} GB; over the sum of job times "
            f"{r['gb_per_s_over_sum']:.1f} GB/s ({r.get('fraction_over_sum', 0):.3f} of the link), "
            f"over the busy time {r['gb_per_s_over_busy']:.1f} GB/s "
            f"({r.get('fraction_over_busy', 0):.3f}); overlap {r['overlap_seconds'] * 1e3:.1f} ms;"
            f" {r['jobs_alone']} jobs alone {r['gb_per_s_alone']:.1f} GB/s, "
            f"{r['jobs_with_other_direction']} beside the other direction "
            f"{r['gb_per_s_with_other_direction']:.1f} GB/s"
        )
    print(f"both ways at once, one 256 MiB copy each: {report['both_ways_copy_gb_per_s']}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
