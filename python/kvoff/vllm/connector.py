"""``KvoffConnector``: vLLM's ``OffloadingConnector`` with kvoff's spec and kvoff's statistics.

Everything vLLM's connector does stays as it is; this subclass selects kvoff's spec (when the
config names none), carries kvoff's ``OffloadingConnectorStats`` through vLLM's stats hooks (the
workers' transfer snapshots and the scheduler's manager snapshot travel in
``KvoffConnectorStats``, aggregate there, and reach vLLM's ``/metrics`` via
``KvoffPromMetrics``), and runs its two roles as ``KvoffConnectorWorker`` /
``KvoffConnectorScheduler``, which turn a failed transfer into a cache miss where vLLM's own
roles assert (``kvoff.vllm.transfer_failures``).
"""

from __future__ import annotations

from typing import Any

from vllm.config import KVTransferConfig, VllmConfig
from vllm.distributed.kv_transfer.kv_connector.v1 import KVConnectorBase_V1, KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
    PromMetric,
    PromMetricT,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.config import (
    build_offloading_config,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading_connector import (
    OffloadingConnector,
)
from vllm.v1.kv_cache_interface import KVCacheConfig
from vllm.v1.kv_offload.factory import OffloadingSpecFactory

from kvoff.errors import InvalidArgumentError
from kvoff.vllm.manager import KvoffOffloadingManager
from kvoff.vllm.stats import KvoffConnectorStats, KvoffPromMetrics
from kvoff.vllm.transfer_failures import KvoffConnectorScheduler, KvoffConnectorWorker
from kvoff.vllm.worker import KvoffOffloadingWorker

__all__ = ["SPEC_NAME", "KvoffConnector"]

SPEC_NAME = "KvoffOffloadingSpec"


def _select_kvoff_spec(kv_transfer_config: KVTransferConfig | None) -> None:
    """Make the extra config name kvoff's spec (as vLLM's factory reads it), or refuse another."""
    if kv_transfer_config is None:
        raise InvalidArgumentError("KvoffConnector needs a kv_transfer_config")
    extra = kv_transfer_config.kv_connector_extra_config
    name = extra.get("spec_name", SPEC_NAME)
    if name != SPEC_NAME:
        raise InvalidArgumentError(
            f"KvoffConnector runs kvoff's spec; kv_connector_extra_config['spec_name'] is "
            f"{name!r} (use kv_connector 'OffloadingConnector' for another spec)"
        )
    extra["spec_name"] = SPEC_NAME
    # Loading by module path keeps working where the plugin did not register the name.
    extra.setdefault("spec_module_path", "kvoff.vllm")


class KvoffConnector(OffloadingConnector):
    def __init__(
        self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig
    ) -> None:
        _select_kvoff_spec(vllm_config.kv_transfer_config)
        # OffloadingConnector.__init__ builds vLLM's own roles and has no hook to choose them, so
        # this does what it does (0.33.0) with kvoff's roles in their place.
        KVConnectorBase_V1.__init__(self, vllm_config, role, kv_cache_config)
        offloading_config = build_offloading_config(vllm_config, kv_cache_config)
        self._canonical_layout = offloading_config.canonical_layout
        spec = OffloadingSpecFactory.create_spec(offloading_config)
        self.connector_scheduler: KvoffConnectorScheduler | None = None
        self.connector_worker: KvoffConnectorWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            self.connector_scheduler = KvoffConnectorScheduler(spec, vllm_config, kv_cache_config)
        elif role == KVConnectorRole.WORKER:
            self.connector_worker = KvoffConnectorWorker(spec, vllm_config, kv_cache_config)

    def get_block_ids_with_load_errors(self) -> set[int]:
        # vLLM's model runner turns these into KVConnectorOutput.invalid_block_ids.
        if self.connector_worker is None:
            return set()
        return self.connector_worker.take_load_errors()

    def get_kv_connector_stats(self) -> KVConnectorStats | None:
        base = super().get_kv_connector_stats()
        out = KvoffConnectorStats(data=dict(base.data) if base is not None else {})
        if self.connector_scheduler is not None:
            manager = self.connector_scheduler.manager
            if isinstance(manager, KvoffOffloadingManager):
                out.add_kvoff(manager.take_kvoff_stats())
        elif self.connector_worker is not None:
            worker = self.connector_worker.worker
            if isinstance(worker, KvoffOffloadingWorker):
                out.add_kvoff(worker.stats.take())
        return None if out.is_empty() else out

    @classmethod
    def build_kv_connector_stats(
        cls, data: dict[str, Any] | None = None
    ) -> KVConnectorStats | None:
        return KvoffConnectorStats(data=data) if data is not None else KvoffConnectorStats()

    @classmethod
    def build_prom_metrics(
        cls,
        vllm_config: VllmConfig,
        metric_types: dict[type[PromMetric], type[PromMetricT]],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> KVConnectorPromMetrics:
        # The front end builds metrics without constructing the connector: select the spec here
        # too, so vLLM's metric definitions come from kvoff's spec.
        _select_kvoff_spec(vllm_config.kv_transfer_config)
        return KvoffPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)
