"""kvoff's statistics inside vLLM's connector-stats pipeline.

vLLM moves a connector's statistics as ``KVConnectorStats.data``: workers report theirs with
each step's output, the scheduler aggregates them with its own, the front end rebuilds the
object with ``build_kv_connector_stats(data)``, reduces it for the log line and passes ``data``
to the connector's Prometheus metrics. ``KvoffConnectorStats`` is vLLM's own offloading payload
(so ``vllm:kv_offload_*`` come out exactly as with vLLM's connector) plus one more entry,
``data["kvoff"]``: kvoff's version-1 snapshot dict (docs/ARCHITECTURE.md), or None.
``KvoffPromMetrics`` publishes both: vLLM's families through vLLM's ``OffloadPromMetrics`` and
kvoff's through ``kvoff.metrics.OffloadPromMetrics``, with vLLM's engine labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from vllm.config import VllmConfig
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
    PromMetric,
    PromMetricT,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.metrics import (
    OffloadingConnectorStats as VllmStats,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.metrics import (
    OffloadPromMetrics as VllmPromMetrics,
)

import kvoff
from kvoff.errors import InvalidArgumentError
from kvoff.metrics import OffloadPromMetrics

__all__ = ["KVOFF_KEY", "KvoffConnectorStats", "KvoffPromMetrics"]

KVOFF_KEY = "kvoff"


@dataclass
class KvoffConnectorStats(VllmStats):
    """vLLM's offloading stats payload with kvoff's snapshot alongside (``data["kvoff"]``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data.setdefault(KVOFF_KEY, None)

    def reset(self) -> None:
        super().reset()
        self.data[KVOFF_KEY] = None

    @property
    def kvoff(self) -> kvoff.OffloadingConnectorStats | None:
        """kvoff's snapshot, validated (a fresh object; editing it changes nothing here)."""
        d = self.data.get(KVOFF_KEY)
        return None if d is None else kvoff.OffloadingConnectorStats(d)

    def add_kvoff(self, snapshot: kvoff.OffloadingConnectorStats) -> None:
        """Add one kvoff snapshot (a worker's or the scheduler's) into this payload."""
        mine = self.kvoff
        merged = snapshot if mine is None else mine.aggregate(snapshot)
        self.data[KVOFF_KEY] = merged.to_dict()

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        if other.is_empty():
            return self
        super().aggregate(other)
        if isinstance(other, KvoffConnectorStats) and (theirs := other.kvoff) is not None:
            self.add_kvoff(theirs)
        return self

    def reduce(self) -> dict[str, int | float]:
        out = super().reduce()
        if (mine := self.kvoff) is not None:
            out.update({f"kvoff_{k}": v for k, v in mine.reduce().items()})
        return out

    def is_empty(self) -> bool:
        mine = self.kvoff
        return super().is_empty() and (mine is None or mine.is_empty())


class KvoffPromMetrics(KVConnectorPromMetrics):
    """vLLM's offloading metrics plus kvoff's families, on the same registry vLLM serves.

    vLLM's label names other than ``engine`` (``model_name``) become constant labels of kvoff's
    series; ``engine`` keeps vLLM's per-engine values. ``registry`` defaults to
    prometheus_client's global registry, the one vLLM's ``/metrics`` serves.
    """

    def __init__(
        self,
        vllm_config: VllmConfig,
        metric_types: dict[type[PromMetric], type[PromMetricT]],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._vllm = VllmPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        # vLLM 0.33 still feeds its deprecated transfer series (vllm:kv_offload_total_bytes,
        # _total_time, _size by transfer_type), but only for specs that subclass its CPU spec;
        # kvoff's spec does not, so they would sit at zero. Under KvoffConnector they are fed
        # as for vLLM's CPU spec, so a dashboard on the old names keeps its values.
        self._vllm._observe_deprecated_metrics = True
        if "engine" not in labelnames:
            raise InvalidArgumentError(f"vLLM label names {labelnames} have no 'engine'")
        e = labelnames.index("engine")
        const: dict[str, str] = {}
        for values in per_engine_labelvalues.values():
            for i, name in enumerate(labelnames):
                if i != e and const.setdefault(name, str(values[i])) != str(values[i]):
                    raise InvalidArgumentError(
                        f"label {name!r} differs between engines ({const[name]!r}, {values[i]!r})"
                    )
        self._engine_label = {idx: str(v[e]) for idx, v in per_engine_labelvalues.items()}
        self._kvoff = OffloadPromMetrics(
            registry=registry, labels=const, engines=list(self._engine_label.values())
        )

    @property
    def kvoff_exporter(self) -> OffloadPromMetrics:
        return self._kvoff

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        self._vllm.observe(transfer_stats_data, engine_idx)
        snapshot = transfer_stats_data.get(KVOFF_KEY)
        if snapshot is not None:
            self._kvoff.observe(
                snapshot, engine=self._engine_label.get(engine_idx, str(engine_idx))
            )
