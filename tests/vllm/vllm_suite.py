"""A pytest plugin that points vLLM's own offloading tests at kvoff (``-p vllm_suite``).

vLLM's tests come from vLLM's source distribution at test time; nothing of them is copied
here. Where a test module builds vLLM's CPU manager by name (``CPUOffloadingManager``), this
plugin rebinds that name, for the duration of each test, to a factory that takes the same
arguments and builds kvoff's manager instead. The test bodies run unchanged.

Run (docs/VLLM_NOTES.md says how to fetch the sdist)::

    cd <dir holding vLLM's tests/> && PYTHONPATH=<kvoff>/python:<kvoff>/tests/vllm \\
        python -m pytest tests/v1/kv_offload/cpu/test_manager.py -p vllm_suite
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

# vLLM test modules whose CPUOffloadingManager name is rebound.
_MANAGER_MODULES = (
    "tests.v1.kv_offload.cpu.test_manager",
    "tests.v1.kv_connector.unit.offloading_connector.test_scheduler",
    "tests.v1.kv_connector.unit.offloading_connector.test_events",
)


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
    return KvoffOffloadingManager(
        num_chunks,
        16,
        policy=cache_policy,
        enable_events=enable_events,
        info=info.as_config_info() if info is not None else None,
        store_threshold=store_threshold,
        max_tracker_size=max_tracker_size,
    )


@pytest.fixture(autouse=True)
def _kvoff_manager(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    module = sys.modules.get(request.module.__name__)
    if module is not None and module.__name__ in _MANAGER_MODULES:
        monkeypatch.setattr(module, "CPUOffloadingManager", kvoff_cpu_manager)
