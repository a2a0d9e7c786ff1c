"""Turn a pytest-benchmark JSON of bench_manager.py into the Markdown table of
docs/PERFORMANCE.md: mean time per block operation, and the reference model's time over
kvoff's on the same trace (the reference of the "int64-array" rows is the "int" list run)."""

from __future__ import annotations

import json
import sys
from typing import Any


def main(path: str) -> None:
    with open(path) as f:
        data: dict[str, Any] = json.load(f)
    per_block: dict[tuple[str, str, str, int], float] = {}
    for b in data["benchmarks"]:
        x = b["extra_info"]
        ns = b["stats"]["mean"] / x["blocks_per_call"] * 1e9
        per_block[(x["op"], x["impl"], x["form"], x["resident"])] = ns
    print("| op | resident blocks | input | reference ns/block | kvoff ns/block | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for (op, impl, form, n), ns in sorted(
        per_block.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][2])
    ):
        if impl != "kvoff":
            continue
        ref_form = "int" if form == "int64-array" else form
        ref = per_block.get((op, "reference", ref_form, n))
        ratio = f"{ref / ns:.1f}x" if ref else "n/a"
        ref_s = f"{ref:.0f}" if ref else "n/a"
        print(f"| {op} | {n:,} | {form} | {ref_s} | {ns:.1f} | {ratio} |")
    info = data.get("machine_info", {})
    print(f"\npython {info.get('python_version')}, cpu {info.get('cpu', {}).get('brand_raw')}")


if __name__ == "__main__":
    main(sys.argv[1])
