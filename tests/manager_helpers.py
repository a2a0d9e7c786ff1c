"""Shared helpers for the manager tests: both implementations, and a full snapshot of state."""

from __future__ import annotations

from typing import Any

from kvoff import OffloadingManager, UnknownHashError
from reference_manager import ReferenceManager

IMPLS = {"kvoff": OffloadingManager, "reference": ReferenceManager}

COUNTERS = (
    "blocks_queried",
    "blocks_hit",
    "blocks_stored",
    "blocks_evicted",
    "allocation_failures",
)


def snapshot(m: Any, probe: list[bytes | int]) -> dict[str, Any]:
    """Everything observable without consuming events: lists, gauges, counters, and the
    (id, state) of each probed hash (None when absent)."""
    blocks: dict[bytes | int, tuple[int, int] | None] = {}
    for h in probe:
        try:
            blocks[h] = (m.block_id(h), m.block_state(h))
        except UnknownHashError:
            blocks[h] = None
    return {
        "policy": m.policy_state(),
        "gauges": (m.capacity, m.free, m.resident, m.pinned, len(m)),
        "counters": tuple(getattr(m, c) for c in COUNTERS),
        "blocks": blocks,
    }
