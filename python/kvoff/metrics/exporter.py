"""``OffloadPromMetrics``: a Prometheus collector fed by stats snapshots.

The hot path never touches Prometheus: Rust records into atomics, the connector hands each
interval's snapshot to :meth:`OffloadPromMetrics.observe`, which adds it into per-engine totals
under a lock, and the metric families are built only when Prometheus scrapes (``collect``).

Exposition, one engine, before any observe (abridged)::

    # TYPE kvoff_transfer_bytes_total counter
    kvoff_transfer_bytes_total{direction="GPU_to_CPU",engine="0"} 0.0
    kvoff_transfer_bytes_total{direction="CPU_to_GPU",engine="0"} 0.0
    # TYPE kvoff_transfer_size_bytes histogram
    kvoff_transfer_size_bytes_bucket{direction="GPU_to_CPU",engine="0",le="4096.0"} 0.0
    ...
    # TYPE kvoff_lookup_hit_blocks_total counter
    kvoff_lookup_hit_blocks_total{engine="0"} 0.0
    # TYPE kvoff_cpu_resident_blocks gauge
    kvoff_cpu_resident_blocks{engine="0"} 0.0
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kvoff._core import Direction, OffloadingConnectorStats
from kvoff.errors import InvalidArgumentError, InvalidStateError
from kvoff.metrics.errors import DuplicateMetricError, UnknownEngineError
from kvoff.metrics.remote_families import remote_tier_families
from kvoff.metrics.snapshot import (
    DURATION_BUCKETS_SECONDS,
    SIZE_BUCKETS_BYTES,
    THROUGHPUT_BUCKETS_BYTES_PER_SECOND,
    as_stats,
)
from kvoff.metrics.vllm_compat import le_label, vllm_families

__all__ = [
    "DEFAULT_MAX_ENGINES",
    "MAX_ENGINE_LABEL_LENGTH",
    "MAX_LABEL_VALUE_LENGTH",
    "OffloadPromMetrics",
]

# Every engine label appears on each of the engine's 340 series (vllm_compatible), so its length
# multiplies (docs/METRICS.md gives the scrape sizes at the bounds).
# vLLM's engine labels are small ints; a host name and a rank fit easily.
MAX_ENGINE_LABEL_LENGTH = 128
# Constant labels are set once by the operator and may be a model path (vLLM's model_name is the
# served model name, often a directory).
MAX_LABEL_VALUE_LENGTH = 1024
# Beyond vLLM's largest data-parallel deployments; an engine that stops is remove_engine()d.
DEFAULT_MAX_ENGINES = 256

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Label names the exporter sets itself; a constant label of the same name would be ambiguous.
_RESERVED_LABELS = frozenset(
    {"engine", "direction", "transfer_type", "tier", "kind", "le", "quantile"}
)

# The GPU link's directions (the `transfer` families) and the remote tier's (`remote`).
DIRECTIONS = Direction.GPU
REMOTE_DIRECTIONS = Direction.REMOTE
# One engine's totals as to_dict() gives them (read once per scrape).
_Data = Mapping[str, Any]

# Both direction subsystems expose the same families: "<namespace>_<subsystem>_<noun>".
# (noun, per-direction key, unit, help)
_DIRECTION_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("ops", "ops", "", "Successful transfers."),
    ("failed_ops", "failed_ops", "", "Failed transfers."),
    ("blocks", "blocks", "", "Blocks moved by successful transfers."),
    ("bytes", "bytes", "bytes", "Bytes moved by successful transfers."),
    ("failed_bytes", "failed_bytes", "bytes", "Bytes of failed transfers."),
)
# (noun, bounds, per-direction counts key, unit, help, _sum value)
_DIRECTION_HISTOGRAMS: tuple[
    tuple[str, tuple[float, ...], str, str, str, Callable[[_Data], float]], ...
] = (
    ("size_bytes", SIZE_BUCKETS_BYTES, "size_counts", "bytes",
     "Size of each successful transfer.", lambda t: t["bytes"]),
    ("duration_seconds", DURATION_BUCKETS_SECONDS, "duration_counts", "seconds",
     "Duration of each successful transfer.", lambda t: t["time_ns"] / 1e9),
    ("throughput_bytes_per_second", THROUGHPUT_BUCKETS_BYTES_PER_SECOND,
     "throughput_counts", "bytes_per_second",
     "Throughput of each successful transfer (its bytes over its duration).",
     lambda t: t["throughput_sum"]),
)  # fmt: skip
_REMOTE_HELP = "Remote tier (an op is one pipelined round trip): "
# (name after the namespace, snapshot section, key, help)
_ENGINE_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("lookup_blocks", "lookups", "blocks_queried", "Blocks looked up in the CPU tier."),
    ("lookup_hit_blocks", "lookups", "blocks_hit", "Looked-up blocks found in the CPU tier."),
    ("lookup_tokens", "lookups", "tokens_queried", "Tokens covered by looked-up blocks."),
    ("lookup_hit_tokens", "lookups", "tokens_hit", "Tokens covered by blocks found."),
    ("cpu_blocks_stored", "manager", "blocks_stored", "Blocks stored into the CPU tier."),
    ("cpu_blocks_evicted", "manager", "blocks_evicted", "Blocks evicted from the CPU tier."),
    ("cpu_allocation_failures", "manager", "allocation_failures",
     "Store requests refused for lack of a free or evictable CPU block."),
)  # fmt: skip
_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("cpu_capacity_blocks", "capacity_blocks", "CPU tier capacity, in blocks."),
    ("cpu_resident_blocks", "resident_blocks", "Blocks held in the CPU tier."),
    ("cpu_pinned_blocks", "pinned_blocks", "CPU blocks pinned by in-flight loads or stores."),
)

_LE: dict[str, tuple[str, ...]] = {
    noun: (*(le_label(b) for b in bounds), "+Inf") for noun, bounds, *_ in _DIRECTION_HISTOGRAMS
}


def _check_label_value(what: str, value: str, max_length: int) -> None:
    if len(value) > max_length:
        raise InvalidArgumentError(
            f"{what} must be at most {max_length} characters, got {len(value)} "
            f"(starting {value[:20]!r})"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate would make every later scrape fail to encode.
        raise InvalidArgumentError(f"{what} must be valid UTF-8 text, got {value[:40]!r}") from None


def _engine_label(engine: object) -> str:
    # vLLM numbers its engines with ints; accept those and label them as vLLM does (str(idx)).
    if type(engine) is int and engine >= 0:
        label = str(engine)
    elif isinstance(engine, str) and engine:
        label = engine
    else:
        raise InvalidArgumentError(f"engine must be a non-empty str or an int >= 0, got {engine!r}")
    _check_label_value("engine", label, MAX_ENGINE_LABEL_LENGTH)
    return label


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidArgumentError(f"labels must be a dict of str to str, got {labels!r}")
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise InvalidArgumentError(f"invalid Prometheus label name {name!r}")
        if name in _RESERVED_LABELS:
            raise InvalidArgumentError(
                f"label {name!r} is set by the exporter itself; choose another constant label"
            )
        if not isinstance(value, str):
            raise InvalidArgumentError(f"label {name!r} must have a str value, got {value!r}")
        _check_label_value(f"label {name!r}", value, MAX_LABEL_VALUE_LENGTH)
    return dict(labels)


class OffloadPromMetrics(Collector):
    """Prometheus collector for kvoff's offload statistics.

    ``observe(stats, engine=...)`` adds one interval's snapshot into cumulative per-engine
    totals; ``collect()`` (called by the registry at scrape time) turns the totals into
    counter, histogram and gauge families. Thread-safe. Registers itself in ``registry`` (the
    global ``prometheus_client.REGISTRY`` when None).

    Every series exists, at zero, for every direction, tier and error kind of every engine in
    ``engines`` from the first scrape; an engine first seen by ``observe`` gets its series from
    then on, and ``remove_engine`` drops them. At most ``max_engines`` engines (default
    :data:`DEFAULT_MAX_ENGINES`) have series at once, and an engine label is at most
    :data:`MAX_ENGINE_LABEL_LENGTH` characters: both bound the size of a scrape.

    ``labels`` are constant labels put on every series (e.g. ``{"model_name": ...}``, which
    vLLM dashboards filter on). ``namespace`` prefixes every kvoff metric name.
    ``vllm_compatible=True`` also exposes vLLM's ``vllm:kv_offload_*`` series: vLLM 0.33.0's
    names (``vllm:kv_offload_load_bytes`` …) and the deprecated ``vllm:kv_offload_total_bytes``,
    ``vllm:kv_offload_total_time`` and ``vllm:kv_offload_size`` (see docs/METRICS.md).

    A registry may hold one exporter per namespace: registering a second one whose names clash
    raises :class:`~kvoff.metrics.DuplicateMetricError` naming the metric, rather than merging
    two exporters' totals behind the user's back.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        labels: Mapping[str, str] | None = None,
        vllm_compatible: bool = False,
        namespace: str = "kvoff",
        engines: Iterable[str | int] = ("0",),
        max_engines: int = DEFAULT_MAX_ENGINES,
    ) -> None:
        if not isinstance(namespace, str) or not _METRIC_NAME.fullmatch(namespace):
            raise InvalidArgumentError(f"invalid metric namespace {namespace!r}")
        if isinstance(engines, (str, bytes)):
            # A bare "01" would otherwise become the engines "0" and "1".
            raise InvalidArgumentError(f"engines must be a sequence of engines, got {engines!r}")
        if type(max_engines) is not int or max_engines < 1:
            raise InvalidArgumentError(f"max_engines must be an int >= 1, got {max_engines!r}")
        self._namespace = namespace
        self._labels = _check_labels(labels)
        self._vllm_compatible = bool(vllm_compatible)
        self._max_engines = max_engines
        self._lock = threading.Lock()
        given: dict[str, None] = {}
        for e in engines:  # stopping at the bound, so that even an endless iterable ends
            given[_engine_label(e)] = None
            if len(given) > max_engines:
                raise InvalidArgumentError(
                    f"engines lists more than max_engines={max_engines} engines"
                )
        # One Rust snapshot per engine, read as cumulative totals; mutated only under the lock.
        self._totals: dict[str, OffloadingConnectorStats] = {
            label: OffloadingConnectorStats() for label in given
        }
        self._registry = REGISTRY if registry is None else registry
        try:
            self._registry.register(self)
        except ValueError as exc:
            clashes = self._clashing_metrics(exc)
            if not clashes:
                raise
            raise DuplicateMetricError(clashes) from exc

    @property
    def registry(self) -> CollectorRegistry:
        """The registry this exporter is registered in."""
        return self._registry

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def vllm_compatible(self) -> bool:
        return self._vllm_compatible

    @property
    def max_engines(self) -> int:
        """How many engines may have series at once."""
        return self._max_engines

    @property
    def engines(self) -> tuple[str, ...]:
        """Engine label values with series, in the order they were first given or seen."""
        with self._lock:
            return tuple(self._totals)

    def observe(self, stats: object, engine: str | int = "0") -> None:
        """Add one interval's snapshot (an ``OffloadingConnectorStats`` or its plain-data dict,
        version 2 or 1) into the totals of ``engine``.

        Counts add up (saturating at 2^64 - 1); the gauges (CPU-tier occupancy, the remote
        write queue) take the snapshot's values, so pass the engine's aggregated snapshot
        (scheduler and workers together). A malformed snapshot raises
        :class:`~kvoff.errors.InvalidArgumentError` and changes nothing.
        """
        label = _engine_label(engine)
        interval = as_stats(stats)
        with self._lock:
            total = self._totals.get(label)
            if total is None:
                if len(self._totals) >= self._max_engines:
                    raise InvalidStateError(
                        f"engine {label!r} would be engine {len(self._totals) + 1} of an "
                        f"exporter with max_engines={self._max_engines}; remove_engine() one "
                        f"that has stopped, or build the exporter with a larger max_engines"
                    )
                total = self._totals[label] = OffloadingConnectorStats()
            # Counters add (saturating at 2^64 - 1), gauges take the interval's values.
            total.accumulate(interval)

    def remove_engine(self, engine: str | int) -> None:
        """Drop every series of ``engine``: the next scrape no longer shows it, and its slot
        under ``max_engines`` is free. Observing it again starts its counters from zero, which
        Prometheus reads as a counter reset. An engine without series raises
        :class:`~kvoff.metrics.UnknownEngineError` (a ``KeyError``) and changes nothing.
        """
        label = _engine_label(engine)
        with self._lock:
            if self._totals.pop(label, None) is None:
                raise UnknownEngineError(label)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            # Copies (about 1 KB each) taken together: every engine as of one instant.
            totals = {label: copy.copy(snap) for label, snap in self._totals.items()}
        return self._families(totals)

    def describe(self) -> Iterable[Metric]:
        # Defining describe() makes every registry (not only auto_describe ones) check our
        # names at register() time, which is where a clash must surface.
        return self._families({})

    def _families(self, snapshots: Mapping[str, OffloadingConnectorStats]) -> list[Metric]:
        totals = {engine: snap.to_dict() for engine, snap in snapshots.items()}
        ns = self._namespace
        const_names = list(self._labels)
        const_values = list(self._labels.values())
        engine_labels = [*const_names, "engine"]
        families: list[Metric] = []

        families.extend(_direction_families(f"{ns}_transfer", DIRECTIONS, "", totals, self._labels))

        for name, section, key, doc in _ENGINE_COUNTERS:
            c = CounterMetricFamily(f"{ns}_{name}", doc, labels=engine_labels)
            for engine, snap in totals.items():
                c.add_metric([*const_values, engine], snap[section][key])
            families.append(c)

        for name, key, doc in _GAUGES:
            g = GaugeMetricFamily(f"{ns}_{name}", doc, labels=engine_labels)
            for engine, snap in totals.items():
                g.add_metric([*const_values, engine], snap["manager"][key])
            families.append(g)

        families.extend(
            _direction_families(
                f"{ns}_remote", REMOTE_DIRECTIONS, _REMOTE_HELP, totals, self._labels
            )
        )
        families.extend(remote_tier_families(ns, totals, self._labels))

        if self._vllm_compatible:
            families.extend(vllm_families(snapshots, self._labels))
        return families

    def _clashing_metrics(self, exc: ValueError) -> list[str]:
        """Names of our families that the registry reported as duplicates ([] when the error
        is about something else)."""
        duplicates = getattr(exc, "duplicates", None)
        if duplicates is None:
            # prometheus_client before DuplicateTimeseries raised a plain ValueError whose
            # message is "Duplicated timeseries in CollectorRegistry: {'name', ...}".
            if not str(exc).startswith("Duplicated timeseries"):
                return []
            duplicates = re.findall(r"'([^']+)'", str(exc))
        duplicated = set(duplicates)
        clashes = []
        for family in self.describe():
            names = {family.name, *(family.name + s for s in _SUFFIXES[family.type])}
            if names & duplicated:
                # Name counters by the sample users query (with _total), the rest by family.
                clashes.append(family.name + ("_total" if family.type == "counter" else ""))
        return clashes


_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": (),
}


def _direction_families(
    prefix: str,
    directions: Sequence[str],
    what: str,
    totals: Mapping[str, _Data],
    const_labels: Mapping[str, str],
) -> list[Metric]:
    """The counters, seconds and histograms of one direction subsystem, one series per
    (engine, direction)."""
    labels = [*const_labels, "engine", "direction"]
    const_values = list(const_labels.values())
    families: list[Metric] = []
    for noun, field, unit, doc in _DIRECTION_COUNTERS:
        c = CounterMetricFamily(f"{prefix}_{noun}", what + doc, labels=labels, unit=unit)
        for engine, snap in totals.items():
            for d in directions:
                c.add_metric([*const_values, engine, d], snap["transfers"][d][field])
        families.append(c)

    seconds = CounterMetricFamily(
        f"{prefix}_seconds", what + "Time spent in successful transfers.", labels=labels,
        unit="seconds",
    )  # fmt: skip
    for engine, snap in totals.items():
        for d in directions:
            seconds.add_metric([*const_values, engine, d], snap["transfers"][d]["time_ns"] / 1e9)
    families.append(seconds)

    for noun, _, counts_field, unit, doc, sum_of in _DIRECTION_HISTOGRAMS:
        h = HistogramMetricFamily(f"{prefix}_{noun}", what + doc, labels=labels, unit=unit)
        for engine, snap in totals.items():
            for d in directions:
                t = snap["transfers"][d]
                h.add_metric(
                    [*const_values, engine, d],
                    list(zip(_LE[noun], _cumulative(t[counts_field]), strict=True)),
                    sum_value=sum_of(t),
                )
        families.append(h)
    return families


def _cumulative(counts: Sequence[int]) -> list[int]:
    out = []
    running = 0
    for c in counts:
        running += c
        out.append(running)
    return out
