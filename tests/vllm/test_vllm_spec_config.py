"""KvoffOffloadingSpec's extra-config keys: vLLM's CPU spec's keys with their meaning, the tier
sized as vLLM sizes it, anything unsupported refused at construction with a clear error."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from vllm.v1.kv_offload.config import (
    OffloadingCacheConfig,
    OffloadingConfig,
    OffloadingGroupConfig,
    OffloadingModelConfig,
    OffloadingParallelConfig,
)
from vllm.v1.kv_offload.cpu.spec import CPUOffloadingSpec

from kvoff.errors import InvalidArgumentError
from kvoff.vllm.spec import KvoffOffloadingSpec


def offloading_config(
    extra: dict[str, Any], bytes_per_block: int = 3000, world_size: int = 1, bpc: int = 1
) -> OffloadingConfig:
    return OffloadingConfig(
        groups=(OffloadingGroupConfig(tokens_per_block=16, layer_names=("l0",), group_id=0),),
        worker_kv_bytes_per_block=bytes_per_block,
        enable_kv_cache_events=False,
        extra_config=extra,
        engine_id="e0",
        model=OffloadingModelConfig(name="m", dtype="float16", max_model_len=1024),
        cache=OffloadingCacheConfig(tokens_per_hash=16, blocks_per_chunk=bpc),
        parallel=OffloadingParallelConfig(
            rank=0,
            world_size=world_size,
            tp_size=world_size,
            pp_size=1,
            pcp_size=1,
            dcp_size=1,
            data_parallel_index=0,
            data_parallel_size=1,
            data_parallel_rank_local=None,
            is_parallelism_agnostic=False,
        ),
    )


@pytest.mark.parametrize(
    ("cpu_bytes", "per_block", "world", "bpc"),
    [(10**6, 3000, 1, 1), (10**6, 3000, 2, 1), (10**7, 5000, 4, 3), (4096 * 7, 4096, 1, 1)],
)
def test_tier_size_and_info_match_vllm_cpu_spec(
    cpu_bytes: int, per_block: int, world: int, bpc: int
) -> None:
    extra = {"cpu_bytes_to_use": cpu_bytes}
    ours = KvoffOffloadingSpec(offloading_config(extra, per_block, world, bpc))
    theirs = CPUOffloadingSpec(offloading_config(extra, per_block, world, bpc))
    assert (ours.num_chunks, ours.kv_bytes_per_chunk) == (
        theirs.num_chunks,
        theirs.kv_bytes_per_chunk,
    )
    assert ours.num_chunks > 0
    assert ours.get_manager().core.num_chunks == theirs.num_chunks
    assert ours.get_manager().config_info() == theirs.get_manager().config_info()
    assert KvoffOffloadingSpec.config_info_keys(extra) == CPUOffloadingSpec.config_info_keys(extra)
    assert KvoffOffloadingSpec.build_metric_definitions(extra).keys() == (
        CPUOffloadingSpec.build_metric_definitions(extra).keys()
    )


def test_every_cpu_spec_key_is_accepted() -> None:
    extra = {
        "spec_name": "KvoffOffloadingSpec",
        "spec_module_path": "kvoff.vllm",
        "cpu_bytes_to_use": "1000000",  # vLLM applies int(); a JSON CLI may pass a string
        "block_size": 16,
        "eviction_policy": "arc",
        "cache_policy_module_path": None,
        "store_threshold": 1,
        "max_tracker_size": 10,
        "offload_prompt_only": False,
        "self_describing_kv_events": True,
        "sync_load_budget_bytes": 0,
        "canonical_layout": False,
    }
    spec = KvoffOffloadingSpec(offloading_config(extra))
    assert spec.tier.eviction_policy == "arc"
    assert spec.get_manager().core.policy == "arc"
    assert spec.num_chunks == 10**6 // 4096


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"cpu_bytes_to_use": 10**6, "evicton_policy": "lru"}, "['evicton_policy']"),
        ({}, "cpu_bytes_to_use must be specified"),
        ({"cpu_bytes_to_use": 10**6, "eviction_policy": "lfu"}, "'lfu'"),
        (
            {"cpu_bytes_to_use": 10**6, "store_threshold": 2},
            "store_threshold'] must be 0 or 1, got 2",
        ),
        ({"cpu_bytes_to_use": 10**6, "cache_policy_module_path": "x.y"}, "'x.y'"),
        ({"cpu_bytes_to_use": 10**6, "canonical_layout": True}, "canonical"),
        ({"cpu_bytes_to_use": "lots"}, "'cpu_bytes_to_use'] must be an int, got str 'lots'"),
        (
            {"cpu_bytes_to_use": 10**6, "max_tracker_size": 0},
            "'max_tracker_size'] must be at least 1",
        ),
        ({"cpu_bytes_to_use": 100}, "cpu_bytes_to_use=100 holds no chunk: one chunk takes 4096"),
    ],
)
def test_unsupported_configuration_is_refused_at_start(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        KvoffOffloadingSpec(offloading_config(extra))
    assert message in str(info.value)
