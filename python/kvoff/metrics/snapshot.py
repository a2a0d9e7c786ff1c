"""The one door every Python consumer of a stats snapshot goes through.

The snapshot's schema is defined and validated once, in Rust: ``OffloadingConnectorStats``
(``from_dict`` for the plain-data form, docs/ARCHITECTURE.md "Stats snapshot as plain data").
:func:`as_stats` turns what a caller hands the exporter or the log line into that type, so a
dict the core would refuse is refused here with the core's message, before any state changes.
The bucket bounds are read from the core too, never copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from kvoff._core import OffloadingConnectorStats
from kvoff.errors import InvalidArgumentError

__all__ = [
    "DURATION_BUCKETS_SECONDS",
    "SIZE_BUCKETS_BYTES",
    "SNAPSHOT_VERSION",
    "THROUGHPUT_BUCKETS_BYTES_PER_SECOND",
    "as_stats",
]

SNAPSHOT_VERSION: Final = OffloadingConnectorStats.VERSION

_BUCKETS = OffloadingConnectorStats.buckets()
# Upper bounds, ascending; +Inf is implicit (each histogram has one count more).
SIZE_BUCKETS_BYTES: Final[tuple[float, ...]] = _BUCKETS["size_bytes"]
DURATION_BUCKETS_SECONDS: Final[tuple[float, ...]] = _BUCKETS["duration_seconds"]
THROUGHPUT_BUCKETS_BYTES_PER_SECOND: Final[tuple[float, ...]] = _BUCKETS[
    "throughput_bytes_per_second"
]


def as_stats(stats: object) -> OffloadingConnectorStats:
    """``stats`` as an ``OffloadingConnectorStats``: itself, or validated from its plain-data
    dict (a mapping, or an object whose ``to_dict()`` returns one). Raises
    :class:`~kvoff.errors.InvalidArgumentError` naming the key at fault."""
    if isinstance(stats, OffloadingConnectorStats):
        return stats
    if not isinstance(stats, Mapping):
        to_dict = getattr(stats, "to_dict", None)
        if not callable(to_dict):
            raise InvalidArgumentError(
                "expected a stats snapshot (an OffloadingConnectorStats, its to_dict() dict, or "
                f"an object with to_dict()), got {type(stats).__name__}"
            )
        stats = to_dict()
    if isinstance(stats, Mapping) and not isinstance(stats, dict):
        stats = dict(stats)
    return OffloadingConnectorStats.from_dict(stats)  # type: ignore[arg-type]
