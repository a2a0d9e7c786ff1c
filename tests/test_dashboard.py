"""docs/grafana-dashboard.json only queries series the exporter actually exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from kvoff.metrics import OffloadPromMetrics

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana-dashboard.json"


def exposed_sample_names() -> set[str]:
    registry = CollectorRegistry()
    OffloadPromMetrics(registry=registry)
    return {s.name for family in registry.collect() for s in family.samples}


def test_every_panel_queries_existing_series() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exposed = exposed_sample_names()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    used = {m for e in exprs for m in re.findall(r"\b(kvoff_[a-z_]+)\{", e)}
    assert used, exprs
    missing = used - exposed
    assert not missing, f"dashboard queries series the exporter does not expose: {missing}"
    # Every kvoff metric family has at least one panel.
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exposed}
    used_families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert {"kvoff_transfer_bytes_total", "kvoff_lookup_hit_blocks_total"} <= used_families
    unused = families - used_families
    assert unused <= {
        "kvoff_transfer_blocks_total",
        "kvoff_transfer_failed_bytes_total",
        "kvoff_transfer_seconds_total",
        "kvoff_lookup_tokens_total",
        "kvoff_remote_blocks_total",
        "kvoff_remote_failed_bytes_total",
        "kvoff_remote_seconds_total",
    }, unused


def test_a_panel_shows_which_tier_served_the_hit() -> None:
    dash = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dash["panels"] if p["title"] == "Which tier served the hit")
    assert [t["expr"] for t in panel["targets"]] == [
        'sum by (tier) (rate(kvoff_hit_blocks_total{engine=~"$engine"}[5m]))'
    ]
    assert panel["targets"][0]["legendFormat"] == "{{tier}}"
