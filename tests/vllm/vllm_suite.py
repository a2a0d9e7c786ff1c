"""A pytest plugin that points vLLM's own offloading tests at kvoff (``-p vllm_suite``).

vLLM's tests come from vLLM's source distribution at test time (vllm_sdist.py); nothing of
them is copied here. Where a test module builds vLLM's CPU manager by name
(``CPUOffloadingManager``), this plugin rebinds that name, for the duration of each test, to a
factory that takes the same arguments and builds kvoff's manager instead. The test bodies run
unchanged. The tests that cannot run against kvoff are deselected, each with its reason
(``DESELECTED``); test_vllm_own_suite.py runs the suite and checks the outcome.

Run by hand (docs/VLLM_NOTES.md, section 11)::

    cd <the tree vllm_sdist.vllm_tests_tree() returns> && \\
        PYTHONPATH=<kvoff>/python:<kvoff>/tests/vllm python -m pytest <SUITE> -p vllm_suite
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

_KV_OFFLOAD = "tests/v1/kv_offload"
_CONNECTOR = "tests/v1/kv_connector/unit/offloading_connector"

# What test_vllm_own_suite.py runs: the files (or single tests) of vLLM's offloading tests
# that take a manager or a spec. Why the others are left out is in docs/VLLM_NOTES.md, §11.
SUITE = (
    f"{_KV_OFFLOAD}/cpu/test_manager.py",
    f"{_KV_OFFLOAD}/cpu/policies/test_factory.py",
    f"{_KV_OFFLOAD}/tiering/test_tier_poll_thread.py::test_lock_defaults_to_no_op",
    f"{_CONNECTOR}/test_scheduler.py",
    f"{_CONNECTOR}/test_events.py",
    f"{_CONNECTOR}/test_metrics.py",
)

# vLLM test modules whose CPUOffloadingManager name is rebound.
_MANAGER_MODULES = (
    "tests.v1.kv_offload.cpu.test_manager",
    "tests.v1.kv_offload.cpu.policies.test_factory",
    "tests.v1.kv_offload.tiering.test_tier_poll_thread",
    "tests.v1.kv_connector.unit.offloading_connector.test_scheduler",
    "tests.v1.kv_connector.unit.offloading_connector.test_events",
)

_PRIVATE = "reads or patches vLLM's CPUOffloadingManager internals: "
_HUB = (
    "needs the Hugging Face hub: create_vllm_config() builds ModelConfig('facebook/opt-125m'), "
    "which fails offline with or without kvoff"
)
_HUB_MOCK = _HUB + "; drives vLLM's connector with MockOffloadingSpec's mock manager"
_HUB_MANAGER = _HUB + "; the one such test that then sets a real CPUOffloadingManager"

_MANAGER_FILE = f"{_KV_OFFLOAD}/cpu/test_manager.py"
_SCHED = f"{_CONNECTOR}/test_scheduler.py"

# vLLM test id (a test, a parametrized test's every case, or a class) -> why it is deselected.
DESELECTED: dict[str, str] = {
    f"{_MANAGER_FILE}::test_cpu_manager_reports_allocation_size_on_allocation_failure": (
        _PRIVATE + "monkeypatches manager._allocate_chunks to fail the allocation"
    ),
    f"{_MANAGER_FILE}::test_lru_batch_eviction_failure_is_atomic": (
        _PRIVATE + "calls manager._policy.evict() of vLLM's LRUCachePolicy directly"
    ),
    f"{_MANAGER_FILE}::test_lru_repeated_pin_cycles_compact_lazy_heap_entries": (
        _PRIVATE + "asserts the size of vLLM's LRUCachePolicy._heap"
    ),
    f"{_MANAGER_FILE}::test_reset_discards_stale_request_access_classification": (
        _PRIVATE + "asserts membership of manager._policy.t1 / .t2 (vLLM's ARCCachePolicy)"
    ),
    f"{_MANAGER_FILE}::TestARCPolicy": (
        _PRIVATE + "every test's _make_manager() returns manager._policy (vLLM's "
        "ARCCachePolicy) and asserts on its t1, t2, b1, b2 and target_t1_size"
    ),
    f"{_MANAGER_FILE}::test_filter_reused_manager": (
        _PRIVATE + "asserts manager.counts, the reuse tracker's dict"
    ),
    f"{_MANAGER_FILE}::test_store_threshold_does_not_hide_ready_reuse": (
        _PRIVATE + "reads manager.stores_skipped_in_current_batch"
    ),
    f"{_MANAGER_FILE}::test_evictable_cache_chunk_count": (
        _PRIVATE + "asserts manager._num_evictable_cache_chunks"
    ),
    f"{_MANAGER_FILE}::test_touch_forwards_req_context_to_policy": (
        _PRIVATE + "monkeypatches manager._policy.touch"
    ),
    f"{_MANAGER_FILE}::test_arc_counts_reuse_once_and_keeps_insertions_in_t1": (
        _PRIVATE + "asserts membership of manager._policy.t1 / .t2"
    ),
    f"{_MANAGER_FILE}::test_arc_reuse_wins_if_same_request_later_reinserts_key": (
        _PRIVATE + "asserts membership of manager._policy.t1 / .t2"
    ),
    f"{_MANAGER_FILE}::test_request_finish_forwards_grouped_deduplicated_accesses": (
        _PRIVATE + "monkeypatches manager._policy.on_request_finished"
    ),
    f"{_MANAGER_FILE}::test_failed_store_records_access_once_and_uses_store_miss_hook": (
        _PRIVATE + "wraps manager._record_request_cache_access and _policy.on_store_miss"
    ),
    f"{_MANAGER_FILE}::test_arc_ghost_hit_adapts_once_per_request_before_insertion": (
        _PRIVATE + "reads manager._policy.target_t1_size and b1"
    ),
    f"{_MANAGER_FILE}::test_arc_pending_chunk_is_not_a_frequency_hit": (
        _PRIVATE + "asserts membership of manager._policy.t1 / .t2"
    ),
    f"{_KV_OFFLOAD}/cpu/policies/test_factory.py::TestCachePolicyFactory::"
    "test_register_and_resolve_custom_policy": (
        "builds the manager with a Python CachePolicy registered in vLLM's CachePolicyFactory "
        "and asserts manager._policy's class; kvoff's manager has only its built-in LRU and ARC"
    ),
    f"{_KV_OFFLOAD}/cpu/policies/test_factory.py::TestCachePolicyFactory::"
    "test_manager_resolves_policy_via_module_path": (
        "builds the manager with cache_policy_module_path (a Python CachePolicy) and asserts "
        "manager._policy's class; kvoff refuses cache_policy_module_path"
    ),
    f"{_SCHED}::test_swa_load_does_not_wait_for_unusable_pending_suffix": _HUB_MANAGER,
    **{
        f"{_SCHED}::{name}": _HUB_MOCK
        for name in (
            "test_external_cache_hit_sources_reconcile_different_group_chunk_sizes",
            "test_cache_reset_holds_promotions_until_flushed_jobs_report",
            "test_cache_reset_fence_ignores_reports_of_other_jobs",
            "test_cache_reset_without_in_flight_jobs_holds_nothing",
            "test_cache_reset_fence_held_too_long_warns_on_idle_steps",
            "test_scheduler_reports_allocation_failure",
            "test_final_sampled_token_does_not_complete_an_offloaded_block",
            "test_abort_queued_request_does_not_build_store_job",
            "test_store_jobs_wait_for_missing_offload_key",
            "test_scheduler_reports_lookup_sync_delay",
            "test_on_schedule_end_is_the_last_manager_call_of_a_step",
            "test_step_releases_the_manager_before_the_model_runs",
            "test_has_pending_push_work_does_not_open_the_step_region",
            "test_take_events_drains_the_manager_inside_the_region",
            "test_scheduler_reports_lookup_async_delay_on_resolve",
            "test_max_offload_tokens_zero_does_not_record_pending_lookups",
            "test_abort_before_hit_uses_placeholder_then_later_hit_heals_removal",
            "test_promotion_hit_precedes_stored_event_translation",
            "test_streaming_session_stores_new_chunks",
            "test_offloading_connector",
            "test_small_hit_loads_synchronously",
            "test_request_preemption",
            "test_on_request_finished_not_deferred_until_store_completion",
            "test_on_request_finished_fires_after_final_block_store",
            "test_concurrent_lookups_of_the_same_prefix",
            "test_abort_loading_requests",
            "test_two_groups_full_and_sliding_window",
            "test_sliding_window_chunk_with_null_block_is_not_stored",
            "test_two_groups_different_block_sizes",
            "test_request_level_policy_stores_all_blocks",
            "test_loads_do_not_populate_fence_index",
            "test_fence_at_update_state_after_alloc",
            "test_fence_at_build_store_jobs",
            "test_complete_store_called_per_job",
            "test_complete_store_waits_for_all_worker_acks",
            "test_max_offload_tokens_validation",
            "test_offload_prompt_only",
            "test_reset_cache",
            "test_reset_cache_finalizes_finished_request_with_pending_store",
            "test_prefix_cache_reset_preserves_same_step_offload_reload",
            "test_async_preempt_readmit_before_transfer_output_is_deferred",
            "test_swa_alignment_skip",
            "test_request_level_supply_covers_consumer_demand",
            "test_stale_sliding_window_block_after_prepare_store_failure",
            "test_skip_reading_prefix_cache",
            "test_max_load_tokens_limits_external_load",
            "TestEagle::test_active_decode_does_not_advance_swa_final_horizon",
            "TestEagle::test_chunked_prefill_uses_final_swa_store_horizon",
            "TestEagle::test_eagle_verified_prevents_double_pop",
            "TestEagle::test_full_attn_lookup_no_hits_returns_zero",
            "TestEagle::test_full_attn_lookup_pops_one_block",
            "TestEagle::test_full_attn_lookup_single_block_returns_zero",
            "TestEagle::test_full_attn_store_excludes_trailing_decode_block",
            "TestEagle::test_full_attn_store_then_load",
            "TestEagle::test_multichunk_store_no_interior_holes",
            "TestEagle::test_non_eagle_tighten_clears_eagle_verified",
            "TestEagle::test_single_block_stored_at_end_of_prefill",
            "TestEagle::test_sw_lookup_inflates_query_max",
            "TestEagle::test_sw_lookup_requires_extra_window_block",
            "TestEagle::test_sw_lookup_w_plus_one_hits_returns_w_blocks",
            "TestEagle::test_sw_store_excludes_trailing_decode_block",
            "test_request_finished_with_pending_stores_populates_fence",
            "test_multiple_in_flight_stores_all_flushed_by_fence",
            "test_request_finished_mixed_full_attn_and_sliding_window",
            "test_retention_interval_sparsifies_swa_stores",
            "test_retention_interval_zero_stores_only_replay_boundary",
            "TestSharedGroupMTPOffload::test_no_annotation_marks_no_groups",
        )
    },
    **{
        f"{_CONNECTOR}/test_events.py::{name}": _HUB + "; builds vLLM's TieringOffloadingSpec"
        for name in (
            "test_tiering_accepts_self_describing_kv_events",
            "test_partial_tier_backpressure_inherits_top_level_defaults",
            "test_tier_override_wins_over_top_level",
            "test_tier_without_backpressure_stays_unconfigured",
        )
    },
    f"{_CONNECTOR}/test_metrics.py::test_scheduler_sends_the_config_info_once": _HUB_MOCK,
}

# Where the plugin writes what it did (test_vllm_own_suite.py reads it), if set.
REPORT_ENV = "KVOFF_VLLM_SUITE_REPORT"
_report_key = pytest.StashKey[dict[str, Any]]()

_built: dict[str, int] = {}  # vLLM test id -> kvoff managers it built
_outcomes: dict[str, str] = {}  # vLLM test id -> "passed", "failed" or "skipped"
_current: list[str] = []  # the running test's id


def kvoff_cpu_manager(
    num_chunks: int,
    cache_policy: str = "lru",
    cache_policy_module_path: str | None = None,
    enable_events: bool = False,
    store_threshold: int = 1,
    max_tracker_size: int = 64_000,
    info: Any = None,
) -> Any:
    """CPUOffloadingManager's constructor signature, building kvoff's manager."""
    from kvoff.errors import InvalidArgumentError
    from kvoff.vllm.manager import KvoffOffloadingManager

    if cache_policy_module_path is not None:
        raise InvalidArgumentError(
            "kvoff's manager has no Python cache policies "
            f"(cache_policy_module_path={cache_policy_module_path!r})"
        )
    manager = KvoffOffloadingManager(
        num_chunks,
        16,
        policy=cache_policy,
        enable_events=enable_events,
        info=info.as_config_info() if info is not None else None,
        store_threshold=store_threshold,
        max_tracker_size=max_tracker_size,
    )
    if _current:
        _built[_current[-1]] = _built.get(_current[-1], 0) + 1
    return manager


def matches(nodeid: str, entry: str) -> bool:
    """Whether a DESELECTED entry names this test (itself, a case of it, or its class)."""
    return nodeid == entry or nodeid.startswith((entry + "[", entry + "::"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    used: set[str] = set()
    for item in items:
        entries = [e for e in DESELECTED if matches(item.nodeid, e)]
        used.update(entries)
        (deselected if entries else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    config.stash[_report_key] = {
        "deselected": sorted(i.nodeid for i in deselected),
        # An entry no collected test matches: the test was renamed or removed upstream.
        "unmatched_entries": sorted(e for e in DESELECTED if e not in used),
        "kvoff_managers_built": _built,
        "outcomes": _outcomes,
    }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # One outcome per test over its phases: a failure anywhere wins, a skip in setup is a skip.
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


@pytest.fixture(autouse=True)
def _kvoff_manager(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    module = sys.modules.get(request.module.__name__)
    if module is not None and module.__name__ in _MANAGER_MODULES:
        monkeypatch.setattr(module, "CPUOffloadingManager", kvoff_cpu_manager)
    _current.append(request.node.nodeid)
    yield
    _current.pop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(REPORT_ENV)
    report = session.config.stash.get(_report_key, None)
    if path and report is not None:
        with open(path, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
