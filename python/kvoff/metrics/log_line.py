"""One log line summarising one stats snapshot.

Format (decided here, tested exactly)::

    KV offload: GPU_to_CPU 1.2 GB in 30.0 ms (40.0 GB/s, 12 ops), CPU_to_GPU idle,
    hits 312/400 blocks (78.0%)

(one line in the log; wrapped here.)

- Sizes and rates use decimal SI prefixes (kB = 1000 B, GB/s = 1e9 B/s, as link speeds are
  quoted), one decimal place; under 1 kB the byte count is printed whole (``512 B``).
- Times use ``us`` below 1 ms, ``ms`` below 1 s (one decimal), then ``s`` (two decimals).
- The rate is the direction's bytes over its summed transfer time, i.e. the mean speed of the
  copies themselves; ``n/a`` when that time is 0.
- A direction with no transfer at all prints ``idle``; one with only failures prints
  ``0 B (0 ops, 2 failed)``; failures are appended only when there are some.
- Hits are blocks found over blocks looked up, with the ratio when anything was looked up.
- With any remote-tier activity in the interval (a remote transfer, a block served by the
  remote tier, a remote lookup, an error, a dropped write) a remote part follows::

    , remote: CPU_to_REMOTE 8.4 MB in 4.0 ms (2.1 GB/s, 2 ops), REMOTE_to_CPU idle,
    served 300 cpu / 12 remote blocks, 3 errors (2 timeout, 1 corrupt), 1 write dropped

  "served" counts blocks handed to requests by the tier that held them.
"""

from __future__ import annotations

from kvoff._core import Direction, DirectionStats, OffloadingConnectorStats
from kvoff.metrics.snapshot import as_stats

__all__ = ["format_stats"]

_DIRECTIONS = Direction.GPU
_BYTE_PREFIXES = ("k", "M", "G", "T", "P", "E")


def format_stats(stats: object) -> str:
    """Summarise a snapshot (an ``OffloadingConnectorStats`` or its plain-data dict, version 2
    or 1) in one line. Raises :class:`~kvoff.errors.InvalidArgumentError` for a malformed
    snapshot."""
    snap = as_stats(stats)
    parts = [f"{d} {_direction(snap.direction(d))}" for d in _DIRECTIONS]
    summary = snap.reduce()
    queried, hit = summary["blocks_queried"], summary["blocks_hit"]
    hits = f"hits {hit}/{queried} blocks"
    if queried:
        hits += f" ({100 * hit / queried:.1f}%)"
    parts.append(hits)
    remote = _remote(snap)
    return "KV offload: " + ", ".join(parts) + (f", remote: {remote}" if remote else "")


def _remote(snap: OffloadingConnectorStats) -> str:
    """The remote part, or "" when the interval saw no remote-tier activity."""
    data = snap.to_dict()
    hits, remote = data["hits"], data["remote"]
    directions = [snap.direction(d) for d in Direction.REMOTE]
    errors = {k: n for k, n in remote["errors"].items() if n}
    active = (
        any(t.ops or t.failed_ops for t in directions)
        or hits["remote"]["blocks"]
        or remote["lookups"]["blocks_queried"]
        or errors
        or remote["writes_dropped"]
    )
    if not active:
        return ""
    parts = [f"{t.direction} {_direction(t)}" for t in directions]
    parts.append(f"served {hits['cpu']['blocks']} cpu / {hits['remote']['blocks']} remote blocks")
    if errors:
        kinds = ", ".join(f"{n} {k}" for k, n in errors.items())
        parts.append(f"{_plural(sum(errors.values()), 'error')} ({kinds})")
    if remote["writes_dropped"]:
        parts.append(f"{_plural(remote['writes_dropped'], 'write')} dropped")
    return ", ".join(parts)


def _direction(t: DirectionStats) -> str:
    if t.ops == 0 and t.failed_ops == 0:
        return "idle"
    counts = _plural(t.ops, "op")
    if t.failed_ops:
        counts += f", {t.failed_ops} failed"
    if t.ops == 0:
        return f"{_bytes(0)} ({counts})"
    rate = _bytes(t.bytes * 1e9 / t.time_ns) + "/s" if t.time_ns else "n/a"
    return f"{_bytes(t.bytes)} in {_duration(t.time_ns)} ({rate}, {counts})"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _bytes(n: float) -> str:
    if round(n) < 1000:
        return f"{round(n)} B"
    value = n / 1000
    for prefix in _BYTE_PREFIXES[:-1]:
        # Decide on the rounded figure, so 999,960 B reads "1.0 MB", never "1000.0 kB".
        if round(value, 1) < 1000:
            return f"{value:.1f} {prefix}B"
        value /= 1000
    return f"{value:.1f} {_BYTE_PREFIXES[-1]}B"


def _duration(ns: int) -> str:
    if round(ns / 1e3, 1) < 1000:
        return f"{ns / 1e3:.1f} us"
    if round(ns / 1e6, 1) < 1000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"
