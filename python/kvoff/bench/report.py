"""The bench's summary: computed from the interval snapshots (the same ones the Prometheus
exporter saw) plus what only the engine knows (tokens, verification, bookkeeping time)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kvoff._core import Direction
from kvoff.bench.engine import EngineTotals, RankFailed, Startup
from kvoff.bench.ranks import RankInfo, RankResult
from kvoff.bench.remote import RemoteSummary, render_remote

DIRECTIONS = Direction.GPU


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
    # The same run's yardstick in this direction, and our share of it: on CUDA one large
    # pinned copy (the link); on CPU tensors a plain copy_ of each transfer's bytes, timed
    # right after it (Summary.baseline says which).
    link_gb_per_s: float | None
    fraction_of_link: float | None


@dataclass(frozen=True)
class RankSummary:
    """One tensor-parallel rank: where it ran and what it moved and verified. Its transfer
    figures come from its own snapshots; the summary's totals are their aggregate (so bytes add
    up exactly, and a block moved by N ranks counts N times in ``ops`` and ``blocks``)."""

    rank: int
    pid: int
    device: str
    device_name: str
    kv_heads: int
    pci_address: str | None
    numa_node: int | None
    failed: bool
    blocks_verified: int | None  # None: the rank failed, its counts are lost
    verify_failures: int | None
    transfers: dict[str, DirectionSummary]


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
    tp: int
    ranks: list[RankSummary]
    rank_failures: list[RankFailed]
    # --remote only: which tier served the hits, and what the remote tier did.
    remote: RemoteSummary | None = None
    # Time to the first served step and the tier's pinning rate (the growing tier).
    startup: Startup | None = None
    # What link_gb_per_s measures: "link" (CUDA) or "copy_" (CPU tensors), or None.
    baseline: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times), q) * 1e3) if times else 0.0


def _directions(
    stats: dict[str, Any], times: dict[str, list[float]], link: dict[str, float] | None
) -> dict[str, DirectionSummary]:
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
            p50_ms=_percentile_ms(times[d], 50),
            p99_ms=_percentile_ms(times[d], 99),
            link_gb_per_s=link_gbps,
            fraction_of_link=gbps / link_gbps if link_gbps else None,
        )
    return transfers


def summarize(
    stats: dict[str, Any],
    totals: EngineTotals,
    *,
    device: str,
    preset: str,
    cpu_capacity_blocks: int,
    cpu_block_bytes: int,
    link: dict[str, float] | None = None,
    rank_stats: dict[int, dict[str, Any]],
    rank_infos: list[RankInfo],
    rank_results: list[RankResult],
    remote: RemoteSummary | None = None,
) -> Summary:
    """``stats`` is the ``to_dict()`` of all interval snapshots aggregated, ``rank_stats``
    the same per rank (with one rank, ``stats`` itself)."""
    baseline = "link" if link else None
    if link is None and totals.copy_seconds:
        baseline = "copy_"
        link = {d: totals.copy_bytes[d] / s / 1e9 for d, s in totals.copy_seconds.items() if s > 0}
    transfers = _directions(stats, totals.transfer_times, link)
    results = {r.rank: r for r in rank_results}
    failed = {f.rank for f in totals.rank_failures}
    ranks = []
    for info in rank_infos:
        times = totals.rank_transfer_times.get(info.rank, totals.transfer_times)
        result = results.get(info.rank)
        ranks.append(
            RankSummary(
                rank=info.rank,
                pid=info.pid,
                device=info.device,
                device_name=info.device_name,
                kv_heads=info.kv_heads,
                pci_address=info.pci_address,
                numa_node=info.numa_node,
                failed=info.rank in failed,
                blocks_verified=result.blocks_verified if result else None,
                verify_failures=result.verify_failures if result else None,
                transfers=_directions(rank_stats[info.rank], times, None),
            )
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
        tp=len(rank_infos),
        ranks=ranks,
        rank_failures=list(totals.rank_failures),
        remote=remote,
        startup=totals.startup,
        baseline=baseline,
    )


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _render_startup(st: Startup, capacity: int) -> str:
    how = "tier pinned in the background" if st.tier_in_background else "tier pinned first"
    rate = (
        f"{st.pinning_gib_per_s:.2f} GiB/s"
        if st.pinning_gib_per_s is not None
        else f"not whole by the end ({st.usable_blocks_at_end} of {capacity} blocks usable)"
    )
    return (
        f"{how}: first step {_seconds(st.first_step_seconds)}, first store"
        f" {_seconds(st.first_store_seconds)}, tier whole {_seconds(st.tier_ready_seconds)};"
        f" pinning {rate}"
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
    if s.startup is not None:
        rows.append(("start-up", _render_startup(s.startup, s.cpu_capacity_blocks)))
    if s.remote is not None:
        rows += render_remote(s.remote)
    for d, t in s.transfers.items():
        yardstick = "copy_'s" if s.baseline == "copy_" else "the link's"
        same = " for the same bytes" if s.baseline == "copy_" else ""
        link = (
            f" ({t.fraction_of_link:.2f} of {yardstick} {t.link_gb_per_s:.1f} GB/s{same})"
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
        (
            "lookups deferred",
            f"{s.lookups_deferred} (blocks being loaded for another request"
            + (", or looked up / fetched in the remote tier)" if s.remote else ")"),
        ),
        ("loads verified", f"{s.blocks_verified} GPU blocks, {s.verify_failures} mismatched"),
        ("bookkeeping", f"{s.bookkeeping_us_per_step:.1f} us per step"),
    ]
    if s.tp > 1:
        for r in s.ranks:
            store, load = r.transfers[Direction.GPU_TO_CPU], r.transfers[Direction.CPU_TO_GPU]
            node = "" if r.numa_node is None else f", NUMA node {r.numa_node}"
            verified = (
                "failed: its verification counts are lost"
                if r.verify_failures is None
                else f"{r.blocks_verified} verified, {r.verify_failures} mismatched"
            )
            rows.append(
                (
                    f"rank {r.rank}",
                    f"{r.device}{node}, {r.kv_heads} KV heads: stores {store.bytes / 1e9:.3f} GB"
                    f" at {store.gb_per_s:.2f} GB/s, loads {load.bytes / 1e9:.3f} GB at"
                    f" {load.gb_per_s:.2f} GB/s; {verified}",
                )
            )
    for f in s.rank_failures:
        rows.append(
            (
                f"rank {f.rank} failed",
                f"at step {f.step}: {f.reason}; {f.transfers_failed} transfers failed,"
                f" {f.store_blocks_failed} CPU blocks not stored"
                f" ({f.store_blocks_resident_after} left in the tier); of"
                f" {f.probe_blocks_in_tier} blocks still in the tier,"
                f" {f.probe_tokens_served} tokens served after",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
