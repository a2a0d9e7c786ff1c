"""Reading a stats snapshot (format version 1) into validated plain values.

The layout is fixed by docs/ARCHITECTURE.md ("Stats snapshot as plain data"). Everything that
consumes a snapshot in Python (the exporter, the log line) goes through :func:`parse_snapshot`,
so a malformed snapshot is rejected in one place, before any state is touched.

Keys beyond the v1 layout are ignored: a producer may add a field without breaking consumers,
while removing or retyping one needs a new version number.

Counts are ints in ``0..=2^64-1``, as ``OffloadingConnectorStats.from_dict`` requires: a value it
would refuse is refused here too, so nothing let in can fail later (a count of 10**400 cannot
become a float when a scrape divides it). Messages never print more than a short form of the
value (Python refuses to print ints beyond 4300 digits, and a repr may be huge or may raise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from kvoff.errors import InvalidArgumentError

__all__ = [
    "DIRECTIONS",
    "DURATION_BUCKETS_SECONDS",
    "SIZE_BUCKETS_BYTES",
    "SNAPSHOT_VERSION",
    "THROUGHPUT_BUCKETS_BYTES_PER_SECOND",
    "DirectionTotals",
    "Snapshot",
    "parse_snapshot",
]

SNAPSHOT_VERSION = 1
U64_MAX = 2**64 - 1

DIRECTIONS: tuple[str, str] = ("GPU_to_CPU", "CPU_to_GPU")

# Upper bounds, ascending; +Inf is implicit. Must equal what the snapshot carries.
SIZE_BUCKETS_BYTES: tuple[float, ...] = (
    4096, 16384, 65536, 262144, 1e6, 5e6, 1e7, 2e7, 4e7, 6e7, 8e7, 1e8, 1.5e8, 2e8, 5e8, 1e9, 4e9,
)  # fmt: skip
DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1,
    2.5, 5, 10,
)  # fmt: skip
THROUGHPUT_BUCKETS_BYTES_PER_SECOND: tuple[float, ...] = (
    1e8, 5e8, 1e9, 2e9, 5e9, 1e10, 2e10, 3e10, 4e10, 5e10, 6e10, 8e10, 1e11,
)  # fmt: skip

# snapshot["buckets"] key -> (expected bounds, per-direction counts key)
_HISTOGRAMS: dict[str, tuple[tuple[float, ...], str]] = {
    "size_bytes": (SIZE_BUCKETS_BYTES, "size_counts"),
    "duration_seconds": (DURATION_BUCKETS_SECONDS, "duration_counts"),
    "throughput_bytes_per_second": (THROUGHPUT_BUCKETS_BYTES_PER_SECOND, "throughput_counts"),
}

_TRANSFER_INTS = ("ops", "failed_ops", "blocks", "bytes", "failed_bytes", "time_ns")
_LOOKUP_INTS = ("blocks_queried", "blocks_hit", "tokens_queried", "tokens_hit")
_MANAGER_INTS = (
    "blocks_stored",
    "blocks_evicted",
    "allocation_failures",
    "capacity_blocks",
    "resident_blocks",
    "pinned_blocks",
)


@dataclass(frozen=True)
class DirectionTotals:
    """One direction of one snapshot: counts of successful and failed transfers, and the
    non-cumulative histogram counts (one more than the bounds: the last is +Inf)."""

    ops: int
    failed_ops: int
    blocks: int
    bytes: int
    failed_bytes: int
    time_ns: int
    size_counts: tuple[int, ...]
    duration_counts: tuple[int, ...]
    throughput_counts: tuple[int, ...]
    throughput_sum: int | float


@dataclass(frozen=True)
class Snapshot:
    """A validated v1 snapshot: ``transfers`` is keyed by direction name, ``lookups`` and
    ``manager`` by the v1 key names."""

    transfers: Mapping[str, DirectionTotals]
    lookups: Mapping[str, int]
    manager: Mapping[str, int]


def parse_snapshot(stats: object) -> Snapshot:
    """Validate a snapshot and return its values.

    ``stats`` is anything with a ``to_dict()`` method (``OffloadingConnectorStats``) or the v1
    dict itself. Raises :class:`~kvoff.errors.InvalidArgumentError` naming the first problem.
    """
    if isinstance(stats, Mapping):
        data: object = stats
    elif callable(getattr(stats, "to_dict", None)):
        data = stats.to_dict()  # type: ignore[attr-defined]
    else:
        raise InvalidArgumentError(
            f"expected a stats snapshot (an object with to_dict(), or its version-1 dict), "
            f"got {type(stats).__name__}"
        )
    root = _mapping(data, "snapshot")
    version = _field(root, "version", "snapshot")
    if type(version) is not int or version != SNAPSHOT_VERSION:
        raise InvalidArgumentError(
            f"unsupported stats snapshot version {_show(version)}: this kvoff reads version "
            f"{SNAPSHOT_VERSION}"
        )

    buckets = _mapping(_field(root, "buckets", "snapshot"), "snapshot['buckets']")
    for key, (expected, _) in _HISTOGRAMS.items():
        _check_bounds(_field(buckets, key, "snapshot['buckets']"), expected, key)

    transfers_in = _mapping(_field(root, "transfers", "snapshot"), "snapshot['transfers']")
    transfers = {
        d: _parse_direction(_field(transfers_in, d, "snapshot['transfers']"), d) for d in DIRECTIONS
    }
    lookups = _int_fields(_field(root, "lookups", "snapshot"), _LOOKUP_INTS, "lookups")
    manager = _int_fields(_field(root, "manager", "snapshot"), _MANAGER_INTS, "manager")
    return Snapshot(transfers=transfers, lookups=lookups, manager=manager)


def _parse_direction(raw: object, direction: str) -> DirectionTotals:
    where = f"transfers[{direction!r}]"
    ints = _int_fields(raw, _TRANSFER_INTS, where)
    block = _mapping(raw, where)
    counts = {
        counts_key: _counts(_field(block, counts_key, where), len(bounds) + 1, where, counts_key)
        for bounds, counts_key in _HISTOGRAMS.values()
    }
    tput_sum = _field(block, "throughput_sum", where)
    if (
        isinstance(tput_sum, bool)
        or not isinstance(tput_sum, (int, float))
        # False for NaN too; infinities are out of range.
        or not 0 <= tput_sum <= U64_MAX
    ):
        raise InvalidArgumentError(
            f"{where}['throughput_sum'] must be a finite number in [0, 2^64 - 1], "
            f"got {_show(tput_sum)}"
        )
    return DirectionTotals(
        **ints,
        size_counts=counts["size_counts"],
        duration_counts=counts["duration_counts"],
        throughput_counts=counts["throughput_counts"],
        throughput_sum=tput_sum,
    )


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{where} must be a dict, got {type(value).__name__}")
    return value


def _field(block: Mapping[str, Any], key: str, where: str) -> object:
    if key not in block:
        raise InvalidArgumentError(f"{where} has no {key!r} entry")
    return block[key]


def _is_count(value: object) -> TypeGuard[int]:
    # bool is an int subclass; a True where a count belongs is a producer bug, not a 1.
    return type(value) is int and 0 <= value <= U64_MAX


def _not_a_count(value: object, where: str) -> InvalidArgumentError:
    if type(value) is int and value > U64_MAX:
        return InvalidArgumentError(f"{where} must be at most 2^64 - 1, got {_show(value)}")
    return InvalidArgumentError(f"{where} must be an int >= 0, got {_show(value)}")


def _show(value: object) -> str:
    """A short, always printable form of a value for an error message."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_show(v) for v in value[:20])
        more = ", ..." if len(value) > 20 else ""
        return f"[{items}{more}]" if isinstance(value, list) else f"({items}{more})"
    try:
        text = repr(value)
    except Exception:  # any repr failure: name the type instead
        return f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


# Messages are formatted only on failure: observe() runs once per interval and engine, and
# eager f-strings for every one of ~130 values were most of its cost.
def _int_fields(raw: object, keys: tuple[str, ...], where: str) -> dict[str, int]:
    block = _mapping(raw, where)
    out: dict[str, int] = {}
    for k in keys:
        value = _field(block, k, where)
        if not _is_count(value):
            raise _not_a_count(value, f"{where}[{k!r}]")
        out[k] = value
    return out


def _counts(raw: object, length: int, where: str, key: str) -> tuple[int, ...]:
    if not isinstance(raw, (list, tuple)):
        raise InvalidArgumentError(
            f"{where}[{key!r}] must be a list of ints, got {type(raw).__name__}"
        )
    if len(raw) != length:
        raise InvalidArgumentError(
            f"{where}[{key!r}] has {len(raw)} counts, expected {length} (one per bucket bound "
            f"plus +Inf)"
        )
    values = tuple(raw)
    # C-level passes (types, then the range) instead of a Python loop per count.
    if set(map(type, values)) != {int} or min(values) < 0 or max(values) > U64_MAX:
        i, bad = next((i, v) for i, v in enumerate(values) if not _is_count(v))
        raise _not_a_count(bad, f"{where}[{key!r}][{i}]")
    return values


def _check_bounds(raw: object, expected: tuple[float, ...], key: str) -> None:
    if not (
        isinstance(raw, (list, tuple))
        and tuple(raw) == expected
        and bool not in set(map(type, raw))
    ):
        raise InvalidArgumentError(
            f"snapshot['buckets'][{key!r}] is {_show(raw)}, expected the version-1 bounds "
            f"{list(expected)!r}"
        )
