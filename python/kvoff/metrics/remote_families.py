"""The remote tier's engine-level families, and which tier served each hit.

Exposition, one engine (abridged)::

    # TYPE kvoff_hit_blocks_total counter
    kvoff_hit_blocks_total{engine="0",tier="cpu"} 300.0
    kvoff_hit_blocks_total{engine="0",tier="remote"} 12.0
    # TYPE kvoff_remote_errors_total counter
    kvoff_remote_errors_total{engine="0",kind="timeout"} 2.0
    ...
    # TYPE kvoff_remote_write_queue_blocks gauge
    kvoff_remote_write_queue_blocks{engine="0"} 5.0

The remote directions' transfer families (``kvoff_remote_bytes_total{direction}`` and the rest)
are built by the exporter with the GPU link's, from the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvoff._core import OffloadingConnectorStats

__all__ = ["ERROR_KINDS", "TIERS", "remote_tier_families"]

TIERS: tuple[str, ...] = OffloadingConnectorStats.TIERS
ERROR_KINDS: tuple[str, ...] = OffloadingConnectorStats.REMOTE_ERROR_KINDS

# (name after the namespace, key in to_dict()["hits"][tier], help)
_HIT_COUNTERS = (
    ("hit_blocks", "blocks", "Blocks served to requests, by the tier that held them."),
    ("hit_tokens", "tokens", "Tokens covered by the blocks served, by the tier that held them."),
)
# (name after the namespace, path in to_dict()["remote"], help)
_REMOTE_COUNTERS = (
    ("remote_lookup_blocks", ("lookups", "blocks_queried"), "Blocks looked up in the remote tier."),
    ("remote_lookup_hit_blocks", ("lookups", "blocks_hit"),
     "Looked-up blocks the remote tier held (the leading run)."),
    ("remote_writes_dropped", ("writes_dropped",),
     "Pending remote writes pushed out of the full write-behind queue."),
)  # fmt: skip


def _at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def remote_tier_families(
    ns: str, totals: Mapping[str, Mapping[str, Any]], const_labels: Mapping[str, str]
) -> list[Metric]:
    """Families of the per-tier hits and the remote tier's counters and gauge, from each
    engine's ``to_dict()`` totals; no series when ``totals`` is empty (``describe()``)."""
    const_names = list(const_labels)
    const_values = list(const_labels.values())
    engine_labels = [*const_names, "engine"]
    families: list[Metric] = []
    for name, key, doc in _HIT_COUNTERS:
        c = CounterMetricFamily(f"{ns}_{name}", doc, labels=[*engine_labels, "tier"])
        for engine, snap in totals.items():
            for tier in TIERS:
                c.add_metric([*const_values, engine, tier], snap["hits"][tier][key])
        families.append(c)
    for name, path, doc in _REMOTE_COUNTERS:
        c = CounterMetricFamily(f"{ns}_{name}", doc, labels=engine_labels)
        for engine, snap in totals.items():
            c.add_metric([*const_values, engine], _at(snap["remote"], path))
        families.append(c)
    errors = CounterMetricFamily(
        f"{ns}_remote_errors",
        "Remote-tier failures by kind: connection, timeout, auth, oom, server (the network or "
        "the server); truncated, foreign, corrupt (values that failed their check, served as "
        "misses).",
        labels=[*engine_labels, "kind"],
    )
    for engine, snap in totals.items():
        for kind in ERROR_KINDS:
            errors.add_metric([*const_values, engine, kind], snap["remote"]["errors"][kind])
    families.append(errors)
    queue = GaugeMetricFamily(
        f"{ns}_remote_write_queue_blocks",
        "Blocks waiting in the remote tier's write-behind queue.",
        labels=engine_labels,
    )
    for engine, snap in totals.items():
        queue.add_metric([*const_values, engine], snap["remote"]["write_queue_blocks"])
    families.append(queue)
    return families
