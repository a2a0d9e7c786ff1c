"""``kvoff bench --remote URL``: the remote tier behind the bench's CPU tier.

The scheduler's tier (lookups) lives in the engine's process, each rank's (fetches and
write-behind) with its shard. Every rank hands its tier's interval counters back with each
reply; :class:`RemoteTally` adds them up with the scheduler's, and :func:`summarize_remote`
turns the totals into the summary's ``remote`` section.

Keys name the bench's model shape, dtype, layout, block sizes and each rank's shard, so two
benches share blocks exactly when their options make the same bytes (same preset, block sizes
and ``--tp``), and the fingerprints a load is checked against are the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvoff._core import Direction

if TYPE_CHECKING:
    from kvoff.bench.presets import ModelShape
    from kvoff.connector import TierHits
    from kvoff.connector.remote_path import RemotePath
    from kvoff.remote import RemoteLayout

# The shard's CpuGpuTransfer layout (vLLM's FlashAttention tensors, K and V apart).
BENCH_LAYOUT = "kv_split"
# After the run, how long the bench waits for write-behind to empty and fetches to come back
# before it closes the tiers (what is still queued then is dropped, and reported).
DRAIN_SECONDS = 10.0


def remote_layout(
    shape: ModelShape, cpu_block_size: int, gpu_block_size: int, tp: int, rank: int = 0
) -> RemoteLayout:
    from kvoff.remote import RemoteLayout

    # A rank's CPU block holds its share of the KV heads (the transfer's cpu_block_bytes).
    block_bytes = cpu_block_size * shape.bytes_per_token() // tp
    return RemoteLayout(
        model=f"kvoff-bench/{shape.name}",
        dtype=shape.dtype,
        layout=BENCH_LAYOUT,
        block_bytes=block_bytes,
        cpu_block_size=cpu_block_size,
        gpu_block_size=gpu_block_size,
        tp_rank=rank,
        tp_size=tp,
    )


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    for k, v in more.items():
        if isinstance(v, dict):
            _add(into.setdefault(k, {}), v)
        elif isinstance(v, list):
            have = into.setdefault(k, [0] * len(v))
            for i, x in enumerate(v):
                have[i] += x
        else:
            into[k] = into.get(k, 0) + v


@dataclass
class RemoteTally:
    """The remote tier's counters over the run: the scheduler's tier and every rank's added
    up (``RemoteStats`` interval dicts), gauges kept per source as last seen."""

    counts: dict[str, Any] = field(default_factory=dict)
    gauges: dict[str, dict[str, int]] = field(default_factory=dict)
    max_queue_depth: int = 0

    def add(self, source: str, interval: dict[str, Any]) -> None:
        interval = dict(interval)
        self.gauges[source] = interval.pop("gauges")
        _add(self.counts, interval)
        self.max_queue_depth = max(
            self.max_queue_depth, sum(g["queue_depth"] for g in self.gauges.values())
        )

    def writes_settled(self) -> bool:
        """Every block a rank's writer took is written, skipped, dropped or failed: nothing
        queued or on its way."""
        wb = self.counts.get("write_behind")
        if wb is None:
            return True
        done = wb["written"] + wb["skipped_existing"] + wb["dropped"] + wb["failed"]
        queued = sum(g["queue_depth"] for g in self.gauges.values())
        return bool(wb["enqueued"] == done and queued == 0)


@dataclass(frozen=True)
class RemoteSummary:
    """Which tier served the hits, and what the remote tier did. Blocks and tokens served are
    the scheduler's (a block counts once); the fetch and write figures are the ranks' added
    up (with ``--tp N`` each rank moves its own shard of a block, so a block counts N times)."""

    url: str  # redacted: never the password
    blocks_hit_cpu: int
    blocks_hit_remote: int
    tokens_hit_cpu: int
    tokens_hit_remote: int
    lookups: int
    lookup_blocks_queried: int
    lookup_blocks_hit: int
    lookup_timeouts: int
    fetched_blocks: int  # became loadable in the CPU tier (every rank verified its shard)
    failed_fetch_blocks: int
    fetch_ops: int
    fetch_failed_ops: int
    fetch_bytes: int
    fetch_blocks_missing: int
    writes_offered: int
    writes_skipped: int  # not offered: link down or too many blocks pinned for writing
    write_ops: int
    write_failed_ops: int
    write_bytes: int
    writes_enqueued: int
    writes_written: int
    writes_skipped_existing: int  # already on the server (another instance wrote them)
    writes_dropped: int  # pushed out of a full write-behind queue
    writes_failed: int
    writes_unsettled_at_exit: int  # still queued or pinned when the bench closed the tier
    max_queue_depth: int
    errors: dict[str, int]
    errors_total: int
    disconnects: int
    reconnects: int


def summarize_remote(
    url: str, hits: TierHits, path: RemotePath, tally: RemoteTally, unsettled: int
) -> RemoteSummary:
    c = tally.counts
    read, write = c["directions"][Direction.REMOTE_TO_CPU], c["directions"][Direction.CPU_TO_REMOTE]
    wb, lk = c["write_behind"], c["lookups"]
    return RemoteSummary(
        url=url,
        blocks_hit_cpu=hits.blocks_hit_cpu,
        blocks_hit_remote=hits.blocks_hit_remote,
        tokens_hit_cpu=hits.tokens_hit_cpu,
        tokens_hit_remote=hits.tokens_hit_remote,
        lookups=lk["requests"],
        lookup_blocks_queried=lk["blocks_queried"],
        lookup_blocks_hit=lk["blocks_hit"],
        lookup_timeouts=path.lookup_timeouts,
        fetched_blocks=path.fetched_blocks,
        failed_fetch_blocks=path.failed_fetch_blocks,
        fetch_ops=read["ops"],
        fetch_failed_ops=read["failed_ops"],
        fetch_bytes=read["bytes"],
        fetch_blocks_missing=c["fetch"]["blocks_missing"],
        writes_offered=path.writes_offered,
        writes_skipped=path.writes_skipped,
        write_ops=write["ops"],
        write_failed_ops=write["failed_ops"],
        write_bytes=write["bytes"],
        writes_enqueued=wb["enqueued"],
        writes_written=wb["written"],
        writes_skipped_existing=wb["skipped_existing"],
        writes_dropped=wb["dropped"],
        writes_failed=wb["failed"],
        writes_unsettled_at_exit=unsettled,
        max_queue_depth=tally.max_queue_depth,
        errors=dict(c["errors"]),
        errors_total=sum(c["errors"].values()),
        disconnects=c["link"]["disconnects"],
        reconnects=c["link"]["reconnects"],
    )


def render_remote(r: RemoteSummary) -> list[tuple[str, str]]:
    blocks = r.blocks_hit_cpu + r.blocks_hit_remote
    errors = ", ".join(f"{k} {v}" for k, v in r.errors.items() if v) or "none"
    return [
        ("remote tier", r.url),
        (
            "hits by tier",
            f"CPU tier {r.blocks_hit_cpu} blocks ({r.tokens_hit_cpu} tokens), remote tier"
            f" {r.blocks_hit_remote} blocks ({r.tokens_hit_remote} tokens)"
            f" = {r.blocks_hit_remote / max(blocks, 1):.1%} of blocks served from remote",
        ),
        (
            "remote lookups",
            f"{r.lookups} round trips, {r.lookup_blocks_hit}/{r.lookup_blocks_queried} blocks"
            f" found, {r.lookup_timeouts} given up",
        ),
        (
            "remote fetches",
            f"{r.fetch_ops} ops ({r.fetch_failed_ops} failed), {r.fetch_bytes / 1e6:.1f} MB;"
            f" {r.fetched_blocks} blocks into the CPU tier, {r.failed_fetch_blocks} failed,"
            f" {r.fetch_blocks_missing} gone since the lookup",
        ),
        (
            "remote writes",
            f"{r.writes_offered} blocks offered ({r.writes_skipped} not: link down or pin"
            f" limit); {r.write_ops} ops ({r.write_failed_ops} failed),"
            f" {r.write_bytes / 1e6:.1f} MB; {r.writes_written} written,"
            f" {r.writes_skipped_existing} already there, {r.writes_dropped} dropped,"
            f" {r.writes_failed} failed, {r.writes_unsettled_at_exit} unsent at exit",
        ),
        ("write-behind queue", f"at most {r.max_queue_depth} blocks"),
        (
            "remote errors",
            f"{r.errors_total} ({errors}); link down {r.disconnects}x, back {r.reconnects}x",
        ),
    ]
