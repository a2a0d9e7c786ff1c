"""``KvoffOffloadingSpec``: what vLLM's ``OffloadingConnector`` builds for ``spec_name``
``"KvoffOffloadingSpec"``: kvoff's manager on the scheduler side, kvoff's copy engine on each
worker, sized and configured from the same ``kv_connector_extra_config`` as vLLM's CPU spec."""

from __future__ import annotations

from typing import Any

from vllm.v1.kv_offload.base import (
    CanonicalKVCaches,
    OffloadingMetricMetadata,
    OffloadingSpec,
)
from vllm.v1.kv_offload.config import OffloadingConfig
from vllm.v1.kv_offload.cpu.common import CPUOffloadingInfo
from vllm.v1.kv_offload.cpu.spec import CPUOffloadingSpec

from kvoff.errors import InvalidArgumentError
from kvoff.vllm.config import num_tier_chunks, parse_extra_config
from kvoff.vllm.manager import KvoffOffloadingManager
from kvoff.vllm.worker import KvoffOffloadingWorker

__all__ = ["KvoffOffloadingSpec"]


class KvoffOffloadingSpec(OffloadingSpec):
    """vLLM offloading spec backed by kvoff. Unsupported extra-config keys raise
    ``InvalidArgumentError`` when vLLM constructs the spec, i.e. at engine start."""

    @classmethod
    def build_metric_definitions(
        cls, extra_config: dict[str, Any]
    ) -> dict[str, OffloadingMetricMetadata]:
        # The manager reports the same tier gauges and allocation histogram as vLLM's CPU spec,
        # under the same names, so the definitions are vLLM's own.
        return CPUOffloadingSpec.build_metric_definitions(extra_config)

    @classmethod
    def config_info_keys(cls, extra_config: dict[str, Any]) -> tuple[str, ...]:
        return CPUOffloadingInfo.config_info_keys()

    def __init__(self, config: OffloadingConfig) -> None:
        super().__init__(config)
        self.tier = parse_extra_config(self.extra_config)
        self.num_chunks, self.kv_bytes_per_chunk = num_tier_chunks(
            self.tier.cpu_bytes_to_use,
            config.worker_kv_bytes_per_block,
            config.parallel.world_size,
            self.blocks_per_chunk,
        )
        if config.worker_kv_bytes_per_block > 0 and self.num_chunks == 0:
            raise InvalidArgumentError(
                f"cpu_bytes_to_use={self.tier.cpu_bytes_to_use} holds no chunk: one chunk takes "
                f"{self.kv_bytes_per_chunk} bytes (all workers, padded to the page size)"
            )
        self.cpu_info = CPUOffloadingInfo.from_config(
            config, self.num_chunks, self.kv_bytes_per_chunk
        )
        self._manager: KvoffOffloadingManager | None = None
        self._worker: KvoffOffloadingWorker | None = None

    def _require_chunks(self) -> None:
        if self.num_chunks == 0:
            raise InvalidArgumentError(
                "the KV cache size per block is unknown here (worker_kv_bytes_per_block=0), "
                "so the CPU tier has no chunks"
            )

    def get_manager(self) -> KvoffOffloadingManager:
        if self._manager is None:
            self._require_chunks()
            tokens_per_chunk = self.tokens_per_block[0] * self.blocks_per_chunk
            self._manager = KvoffOffloadingManager(
                self.num_chunks,
                tokens_per_chunk,
                policy=self.tier.eviction_policy,
                enable_events=self.kv_events_config.enable_kv_cache_events,
                info=self.cpu_info.as_config_info(),
            )
        return self._manager

    def get_worker(self, kv_caches: CanonicalKVCaches) -> KvoffOffloadingWorker:
        if self._worker is None:
            self._require_chunks()
            self._worker = KvoffOffloadingWorker(kv_caches, self.blocks_per_chunk, self.num_chunks)
        return self._worker
