"""``kv_connector_extra_config`` for kvoff's spec: the keys vLLM 0.33's CPU spec reads, checked.

Switching from ``CPUOffloadingSpec`` to ``KvoffOffloadingSpec`` is a change of ``spec_name``
alone, so every key keeps the meaning vLLM gives it, and the tier's size in chunks is computed
exactly as ``CPUOffloadingSpec`` computes it. A key kvoff does not support (or a value of a
supported key that it cannot honour) is refused here, at start, rather than ignored.
"""

from __future__ import annotations

import mmap
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvoff.errors import InvalidArgumentError

__all__ = ["ACCEPTED_KEYS", "KvoffTierConfig", "num_tier_chunks", "parse_extra_config"]

# Keys that vLLM's connector path reads itself (factory, offloading config, base spec,
# scheduler) and that kvoff therefore only has to tolerate, with vLLM's meaning.
_VLLM_HANDLED = (
    "spec_name",
    "spec_module_path",
    "block_size",
    "blocks_per_chunk",
    "offload_prompt_only",
    "self_describing_kv_events",
    "sync_load_budget_bytes",
    "canonical_layout",
)
# Keys CPUOffloadingSpec reads, which kvoff's spec implements.
_SPEC_KEYS = (
    "cpu_bytes_to_use",
    "eviction_policy",
    "cache_policy_module_path",
    "store_threshold",
    "max_tracker_size",
)
ACCEPTED_KEYS: frozenset[str] = frozenset(_VLLM_HANDLED + _SPEC_KEYS)

POLICIES = ("lru", "arc")
# CPUOffloadingSpec pads each chunk to the host page size (its shared region's alignment).
CHUNK_ALIGNMENT = mmap.PAGESIZE


@dataclass(frozen=True)
class KvoffTierConfig:
    """What kvoff's manager and worker need from the extra config."""

    cpu_bytes_to_use: int
    eviction_policy: str
    max_tracker_size: int


def _int_value(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(
            f"kv_connector_extra_config[{key!r}] must be an int, got {value!r}"
        )
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        # vLLM applies int() to these keys, so a numeric string from a JSON CLI flag works there.
        try:
            n = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"kv_connector_extra_config[{key!r}] must be an int, got "
                f"{type(value).__name__} {value!r}"
            ) from None
    if n < minimum:
        raise InvalidArgumentError(
            f"kv_connector_extra_config[{key!r}] must be at least {minimum}, got {n}"
        )
    return n


def parse_extra_config(extra: Mapping[str, Any]) -> KvoffTierConfig:
    """Check ``extra`` and return kvoff's settings; InvalidArgumentError names any problem."""
    unknown = sorted(k for k in extra if k not in ACCEPTED_KEYS)
    if unknown:
        raise InvalidArgumentError(
            f"KvoffOffloadingSpec does not support kv_connector_extra_config key(s) {unknown}; "
            f"supported keys: {sorted(ACCEPTED_KEYS)}"
        )
    if not extra.get("cpu_bytes_to_use"):
        raise InvalidArgumentError(
            "cpu_bytes_to_use must be specified in kv_connector_extra_config "
            "(the CPU tier's size in bytes, summed over all workers)"
        )
    cpu_bytes = _int_value("cpu_bytes_to_use", extra["cpu_bytes_to_use"], 1)
    policy = extra.get("eviction_policy", "lru")
    if policy not in POLICIES:
        raise InvalidArgumentError(
            f"kv_connector_extra_config['eviction_policy'] must be one of {list(POLICIES)} "
            f"for KvoffOffloadingSpec, got {policy!r}"
        )
    if extra.get("cache_policy_module_path") is not None:
        raise InvalidArgumentError(
            "KvoffOffloadingSpec does not run Python cache policies: "
            "kv_connector_extra_config['cache_policy_module_path'] must be unset, got "
            f"{extra['cache_policy_module_path']!r}"
        )
    # vLLM: below 2 the reuse filter is off (0 and 1 both mean "store on first offer").
    threshold = _int_value("store_threshold", extra.get("store_threshold", 0), 0)
    if threshold >= 2:
        raise InvalidArgumentError(
            "KvoffOffloadingSpec does not implement the reuse filter yet: "
            f"kv_connector_extra_config['store_threshold'] must be 0 or 1, got {threshold}"
        )
    # Only meaningful with store_threshold >= 2 (as in vLLM), but still checked.
    tracker = _int_value("max_tracker_size", extra.get("max_tracker_size", 64_000), 1)
    if extra.get("canonical_layout"):
        raise InvalidArgumentError(
            "KvoffOffloadingSpec does not implement vLLM's canonical (parallelism-free) host "
            "layout: kv_connector_extra_config['canonical_layout'] must be false"
        )
    return KvoffTierConfig(
        cpu_bytes_to_use=cpu_bytes, eviction_policy=policy, max_tracker_size=tracker
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def num_tier_chunks(
    cpu_bytes_to_use: int, worker_kv_bytes_per_block: int, world_size: int, blocks_per_chunk: int
) -> tuple[int, int]:
    """``(num_chunks, padded bytes per chunk)`` as CPUOffloadingSpec computes them without its
    single-copy (replicated) layout, which kvoff does not have: a chunk holds every worker's
    bytes for ``blocks_per_chunk`` blocks, padded to the host page size."""
    if worker_kv_bytes_per_block <= 0 or world_size <= 0:
        return 0, 0
    per_chunk = _round_up(
        worker_kv_bytes_per_block * world_size * blocks_per_chunk, CHUNK_ALIGNMENT
    )
    return cpu_bytes_to_use // per_chunk, per_chunk
