"""Counters of the remote tier, shared by its threads.

The two remote directions (``CPU_to_REMOTE``, ``REMOTE_to_CPU``) are kept by the core's
``StatsAccumulator``, so they carry exactly the fields, bucket bounds and bucket rules of a
transfer direction of the stats snapshot (ops, failed_ops, blocks, bytes, failed_bytes,
time_ns, the size / duration / throughput histograms). An op is one pipelined round trip (a
batch of blocks), as a transfer op is one job. The rest (lookup round trips, write-behind,
link, gauges) are plain counters here.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Final

from kvoff._core import Direction, OffloadingConnectorStats, StatsAccumulator
from kvoff.errors import InvalidArgumentError, InvalidStateError

__all__ = ["ERROR_KINDS", "REMOTE_DIRECTIONS", "RemoteStats"]

WRITE: Final = Direction.CPU_TO_REMOTE
READ: Final = Direction.REMOTE_TO_CPU
REMOTE_DIRECTIONS: Final = (WRITE, READ)

#: Why an operation or a value failed (the schema's kinds): connection / timeout / auth / oom /
#: server come from the network or the server; truncated / foreign / corrupt are values that
#: failed the check.
ERROR_KINDS: Final[tuple[str, ...]] = OffloadingConnectorStats.REMOTE_ERROR_KINDS

_GAUGES: Final = ("queue_depth", "queue_bytes", "up")


def _fresh() -> dict[str, Any]:
    return {
        # Existence checks answered (several share one round trip when queued together),
        # blocks asked about, blocks found (the leading run).
        "lookups": {"requests": 0, "blocks_queried": 0, "blocks_hit": 0},
        # Fetches of blocks that a lookup had seen but were gone by the GET (evicted, expired).
        "fetch": {"blocks_missing": 0},
        "errors": dict.fromkeys(ERROR_KINDS, 0),
        "write_behind": {
            "enqueued": 0,
            "written": 0,
            # Already on the server (another instance wrote them): not sent again.
            "skipped_existing": 0,
            # Pushed out of a full queue, oldest first.
            "dropped": 0,
            "failed": 0,
        },
        # disconnects: the tier went down; reconnects: it came back.
        "link": {"disconnects": 0, "reconnects": 0},
        "gauges": dict.fromkeys(_GAUGES, 0),
    }


class RemoteStats:
    """Thread-safe counters. :meth:`take` returns the interval since the last take (gauges as
    they are now); :meth:`totals` everything since construction.

    Once :meth:`attach` has given it a :class:`~kvoff.StatsAccumulator`, every record is also
    forwarded into it as it happens (the mapping is docs/ARCHITECTURE.md's stats section), so
    the connector's snapshot and ``/metrics`` carry the remote tier. Counters kept only here:
    lookup round trips, ``fetch.blocks_missing``, the write-behind counters other than
    ``dropped``, the link's disconnects / reconnects and the ``queue_bytes`` / ``up`` gauges.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = _fresh()
        # The remote directions: recorded into the core's accumulator, folded into the running
        # total whenever the counters are read.
        self._ops = StatsAccumulator()
        self._ops_total = OffloadingConnectorStats()
        self._sink: StatsAccumulator | None = None
        self._taken = self._now()

    @property
    def accumulator(self) -> StatsAccumulator | None:
        """The accumulator records are forwarded into, or None."""
        return self._sink

    def attach(self, accumulator: StatsAccumulator) -> None:
        """Forward every later record into ``accumulator`` (and set its write-queue gauge to
        the current depth now). Attaching the same accumulator again does nothing; a
        different one is refused (InvalidStateError, the first stays): one process's tier
        reports into one snapshot. Not a StatsAccumulator: InvalidArgumentError."""
        if not isinstance(accumulator, StatsAccumulator):
            raise InvalidArgumentError(
                f"accumulator must be a StatsAccumulator, got {type(accumulator).__name__}"
            )
        with self._lock:
            if self._sink is accumulator:
                return
            if self._sink is not None:
                raise InvalidStateError(
                    "this RemoteStats already forwards into another StatsAccumulator (a remote "
                    "tier feeds one process's snapshot); nothing was changed"
                )
            self._sink = accumulator
            accumulator.set_write_queue(self._total["gauges"]["queue_depth"])

    def record_op(
        self, direction: str, *, blocks: int, nbytes: int, seconds: float, success: bool
    ) -> None:
        with self._lock:
            self._ops.record_transfer(direction, nbytes, seconds, success, blocks)
            if self._sink is not None:
                self._sink.record_transfer(direction, nbytes, seconds, success, blocks)

    def record_lookup(self, queried: int, hit: int) -> None:
        with self._lock:
            lk = self._total["lookups"]
            lk["requests"] += 1
            lk["blocks_queried"] += queried
            lk["blocks_hit"] += hit
            if self._sink is not None:
                self._sink.record_remote_lookup(queried, hit)

    def record_error(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._total["errors"][kind] += n
            if self._sink is not None:
                self._sink.record_remote_error(kind, n)

    def add(self, group: str, name: str, n: int = 1) -> None:
        with self._lock:
            self._total[group][name] += n
            if self._sink is not None and (group, name) == ("write_behind", "dropped"):
                self._sink.record_writes_dropped(n)

    def set_gauge(self, name: str, value: int) -> None:
        with self._lock:
            self._total["gauges"][name] = value
            if self._sink is not None and name == "queue_depth":
                self._sink.set_write_queue(value)

    def _now(self) -> dict[str, Any]:
        """Everything since construction (call with the lock held)."""
        self._ops_total.accumulate(self._ops.take())
        transfers = self._ops_total.to_dict()["transfers"]
        now = copy.deepcopy(self._total)
        now["directions"] = {d: transfers[d] for d in REMOTE_DIRECTIONS}
        return now

    def totals(self) -> dict[str, Any]:
        with self._lock:
            return self._now()

    def take(self) -> dict[str, Any]:
        with self._lock:
            now = self._now()
            out: dict[str, Any] = _minus(now, self._taken)
            out["gauges"] = dict(now["gauges"])
            self._taken = now
            return out


def _minus(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: _minus(v, b[k]) for k, v in a.items()}
    if isinstance(a, list):
        return [x - y for x, y in zip(a, b, strict=True)]
    return a - b
