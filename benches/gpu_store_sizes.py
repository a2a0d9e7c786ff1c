"""Store and load jobs of the llama-3-8b block shape by size, against a pinned ``copy_`` of the
same bytes, on an idle GPU and behind a busy compute stream (CUDA only).

``kvoff bench`` stores average about 14 blocks (29 MB); a job's fixed costs (its ids' upload,
the first gather's launch, the last scatter) weigh on such a job in a way the 128 MiB table
rows cannot show. Per job size this reports the device time of kvoff's job (its own timing
events) and of one ``copy_`` of the same bytes (events around it), each on an idle GPU and
issued behind a ~2 ms sleep of the compute stream, medians of ``--reps``; and the same for a
few edge-piece sizes (the plan's short first piece of a store, last of a load).

    python benches/gpu_store_sizes.py --out sizes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

import kvoff.transfer.engine as engine_mod
from kvoff.transfer import CpuGpuTransfer

LAYERS, CHUNK = 32, 32 << 10  # llama-3-8b: 32 layers, K/V of 16 tokens x 8 heads x 128 x bf16
SLOT = LAYERS * 2 * CHUNK  # one GPU block: 2 MiB
SIZES = [1, 2, 4, 8, 14, 28, 64]
POOL = 256


def _event() -> Any:
    return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]


def _park() -> None:
    torch.cuda.synchronize()
    torch.cuda._sleep(4_000_000)  # type: ignore[no-untyped-call]


def copy_time(dev: torch.Tensor, host: torch.Tensor, nbytes: int, store: bool, busy: bool) -> float:
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    if busy:
        _park()
    else:
        torch.cuda.synchronize()
    stream.wait_stream(torch.cuda.current_stream())
    e0, e1 = _event(), _event()
    dst, src = (host[:nbytes], dev[:nbytes]) if store else (dev[:nbytes], host[:nbytes])
    with torch.cuda.stream(stream):
        e0.record(stream)
        dst.copy_(src, non_blocking=True)
        e1.record(stream)
    e1.synchronize()
    return float(e0.elapsed_time(e1)) / 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    kv = [
        torch.randn(2, POOL, CHUNK // 2, dtype=torch.bfloat16, device="cuda") for _ in range(LAYERS)
    ]
    t = CpuGpuTransfer(kv, 16, 16, 2 * max(SIZES), layout="kv_split")
    dev = torch.empty(max(SIZES) * SLOT, dtype=torch.uint8, device="cuda")
    host = torch.empty(max(SIZES) * SLOT, dtype=torch.uint8, pin_memory=True)
    gen = torch.Generator().manual_seed(1)
    jobs = iter(range(1 << 40))
    real_plan = engine_mod.plan_job

    def job_time(store: bool, n: int, busy: bool) -> float:
        gpu = torch.randperm(POOL, generator=gen)[:n].tolist()
        cpu = list(range(n)) if store else list(range(max(SIZES), max(SIZES) + n))
        jid = next(jobs)
        if busy:
            _park()
        else:
            torch.cuda.synchronize()
        t.transfer_async(jid, "GPU_to_CPU" if store else "CPU_to_GPU", gpu, cpu)
        (res,) = t.wait([jid])
        assert res.success and res.transfer_size == n * SLOT
        return float(res.transfer_time)

    t.transfer_async(next(jobs), "GPU_to_CPU", list(range(max(SIZES))), list(range(64, 128)))
    t.wait(list(t.in_flight()))
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(), "rows": []}
    for edge in (None, 1, 4, 16):  # None: the engine's default (an eighth of a buffer)
        engine_mod.plan_job = (  # type: ignore[assignment]
            real_plan if edge is None else partial(_with_edge, real_plan, edge)
        )
        for store in (True, False):
            for n in SIZES:
                row: dict[str, Any] = {"edge": edge, "store": store, "blocks": n}
                for busy in (False, True):
                    tag = "busy" if busy else "idle"
                    fns = {
                        "kvoff": partial(job_time, store, n, busy),
                        "copy": partial(copy_time, dev, host, n * SLOT, store, busy),
                    }
                    for name, fn in fns.items():
                        fn()
                        row[f"{name}_{tag}_s"] = statistics.median(fn() for _ in range(args.reps))
                    row[f"ratio_{tag}"] = row[f"copy_{tag}_s"] / row[f"kvoff_{tag}_s"]
                report["rows"].append(row)
                print(
                    f"edge {edge} {'store' if store else 'load '} {n:3d} blocks: "
                    f"idle {row['ratio_idle']:.3f} ({row['kvoff_idle_s'] * 1e6:.0f} vs "
                    f"{row['copy_idle_s'] * 1e6:.0f} us), behind compute {row['ratio_busy']:.3f}",
                    flush=True,
                )
    engine_mod.plan_job = real_plan
    args.out.write_text(json.dumps(report, indent=2))
    return 0


def _with_edge(real: Any, edge: int, **kw: Any) -> Any:
    if kw.get("edge_piece") is not None and kw["edge_piece"] < kw["slots_per_piece"]:
        kw["edge_piece"] = edge
    return real(**kw)


if __name__ == "__main__":
    sys.exit(main())
