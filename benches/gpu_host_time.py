"""Host time inside ``transfer_async`` for the 128 MiB jobs of ``gpu_transfer.py``'s table, with
many repeats (CUDA only): the host's time is noisy on a shared machine, so this reports the
median and the 10th and 90th percentiles of ``--reps`` calls per job, the GPU idle before each.
Run it for two versions of kvoff alternately (``PYTHONPATH``) to compare them in one session.

    python benches/gpu_host_time.py --out host.json [--reps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpu_transfer import CONFIGS, KvoffJobs, _canonical, _kv_split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for chunk, layers, blocks in CONFIGS:
        pool = 4 * blocks
        kv = _kv_split(layers, pool, chunk)
        gpu_ids = torch.randperm(pool, generator=torch.Generator().manual_seed(chunk))[:blocks]
        layouts: list[tuple[str, object]] = [("kv_split", kv)]
        if chunk == 32 << 10:
            layouts.append(("canonical", _canonical(kv)))
        for layout, gpu_kv in layouts:
            jobs = KvoffJobs(gpu_kv, layout, gpu_ids.tolist())
            row: dict[str, Any] = {"chunk_bytes": chunk, "layout": layout}
            for store in (True, False):
                jobs.host_us(store)
                xs = np.asarray([jobs.host_us(store) for _ in range(args.reps)])
                name = "store" if store else "load"
                for q in (10, 50, 90):
                    row[f"{name}_p{q}_us"] = float(np.percentile(xs, q))
            rows.append(row)
            print(
                f"{chunk >> 10:5d} KiB {layout:9s}: store {row['store_p50_us']:.0f} us "
                f"(p10 {row['store_p10_us']:.0f}, p90 {row['store_p90_us']:.0f}), load "
                f"{row['load_p50_us']:.0f} us (p10 {row['load_p10_us']:.0f}, "
                f"p90 {row['load_p90_us']:.0f})",
                flush=True,
            )
            del jobs
        del kv
        torch.cuda.empty_cache()
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
