"""The bench's summary: computed from the interval snapshots (the same ones the Prometheus
exporter saw) plus what only the engine knows (tokens, verification, bookkeeping time)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kvoff.bench.engine import EngineTotals

DIRECTIONS = ("GPU_to_CPU", "CPU_to_GPU")


@dataclass(frozen=True)
class DirectionSummary:
    ops: int
    failed_ops: int
    blocks: int
    bytes: int
    seconds: float
    gb_per_s: float
    p50_ms: float
    p99_ms: float
    # The same run's single large pinned copy in this direction (CUDA only), and our share of it.
    link_gb_per_s: float | None
    fraction_of_link: float | None


@dataclass(frozen=True)
class Summary:
    device: str
    preset: str
    requests: int
    requests_rejected: int
    steps: int
    wall_seconds: float
    cpu_capacity_blocks: int
    cpu_block_bytes: int
    blocks_queried: int
    blocks_hit: int
    block_hit_rate: float
    tokens_prompt: int
    tokens_from_cpu: int
    blocks_stored: int
    evictions: int
    allocation_failures: int
    lookups_deferred: int
    failed_loads: int
    blocks_verified: int
    verify_failures: int
    bookkeeping_us_per_step: float
    transfers: dict[str, DirectionSummary]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times), q) * 1e3) if times else 0.0


def summarize(
    stats: dict[str, Any],
    totals: EngineTotals,
    *,
    device: str,
    preset: str,
    cpu_capacity_blocks: int,
    cpu_block_bytes: int,
    link: dict[str, float] | None = None,
) -> Summary:
    """``stats`` is the ``to_dict()`` of all interval snapshots aggregated."""
    transfers = {}
    for d in DIRECTIONS:
        s = stats["transfers"][d]
        seconds = s["time_ns"] / 1e9
        gbps = s["bytes"] / seconds / 1e9 if seconds > 0 else 0.0
        link_gbps = link.get(d) if link else None
        transfers[d] = DirectionSummary(
            ops=s["ops"],
            failed_ops=s["failed_ops"],
            blocks=s["blocks"],
            bytes=s["bytes"],
            seconds=seconds,
            gb_per_s=gbps,
            p50_ms=_percentile_ms(totals.transfer_times[d], 50),
            p99_ms=_percentile_ms(totals.transfer_times[d], 99),
            link_gb_per_s=link_gbps,
            fraction_of_link=gbps / link_gbps if link_gbps else None,
        )
    lookups, mgr = stats["lookups"], stats["manager"]
    queried, hit = lookups["blocks_queried"], lookups["blocks_hit"]
    return Summary(
        device=device,
        preset=preset,
        requests=totals.requests_finished,
        requests_rejected=totals.requests_rejected,
        steps=totals.steps,
        wall_seconds=totals.wall_seconds,
        cpu_capacity_blocks=cpu_capacity_blocks,
        cpu_block_bytes=cpu_block_bytes,
        blocks_queried=queried,
        blocks_hit=hit,
        block_hit_rate=hit / queried if queried else 0.0,
        tokens_prompt=totals.tokens_prompt,
        tokens_from_cpu=totals.tokens_from_cpu,
        blocks_stored=mgr["blocks_stored"],
        evictions=mgr["blocks_evicted"],
        allocation_failures=mgr["allocation_failures"],
        lookups_deferred=totals.lookups_deferred,
        failed_loads=totals.failed_loads,
        blocks_verified=totals.blocks_verified,
        verify_failures=totals.verify_failures,
        bookkeeping_us_per_step=totals.bookkeeping_seconds / max(totals.steps, 1) * 1e6,
        transfers=transfers,
    )


def render(s: Summary) -> str:
    rows: list[tuple[str, str]] = [
        ("device", s.device),
        ("preset", s.preset),
        ("requests", f"{s.requests} ({s.requests_rejected} rejected) in {s.steps} steps"),
        ("wall time", f"{s.wall_seconds:.2f} s"),
        (
            "CPU tier",
            f"{s.cpu_capacity_blocks} blocks x {s.cpu_block_bytes / 2**20:.2f} MiB"
            f" = {s.cpu_capacity_blocks * s.cpu_block_bytes / 2**30:.2f} GiB",
        ),
        ("block hit rate", f"{s.block_hit_rate:.1%} ({s.blocks_hit}/{s.blocks_queried} blocks)"),
        (
            "tokens from CPU",
            f"{s.tokens_from_cpu} of {s.tokens_prompt} prompt tokens"
            f" ({s.tokens_from_cpu / max(s.tokens_prompt, 1):.1%})",
        ),
    ]
    for d, t in s.transfers.items():
        link = (
            f" ({t.fraction_of_link:.2f} of the link's {t.link_gb_per_s:.1f} GB/s)"
            if t.fraction_of_link is not None and t.link_gb_per_s is not None
            else ""
        )
        rows.append(
            (
                d,
                f"{t.ops} ops ({t.failed_ops} failed), {t.bytes / 1e9:.3f} GB,"
                f" {t.gb_per_s:.2f} GB/s per transfer{link},"
                f" p50 {t.p50_ms:.3f} ms, p99 {t.p99_ms:.3f} ms",
            )
        )
    rows += [
        ("blocks stored", str(s.blocks_stored)),
        ("evictions", str(s.evictions)),
        ("allocation failures", str(s.allocation_failures)),
        ("lookups deferred", f"{s.lookups_deferred} (blocks being loaded for another request)"),
        ("loads verified", f"{s.blocks_verified} GPU blocks, {s.verify_failures} mismatched"),
        ("bookkeeping", f"{s.bookkeeping_us_per_step:.1f} us per step"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
