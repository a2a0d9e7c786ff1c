"""Tests of kvoff inside vLLM. They need vLLM 0.33.0 (the README's test command installs it);
without it every module here is skipped, saying so, unless ``KVOFF_REQUIRE_VLLM=1`` (CI) makes
each such skip a failure."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

# Before vLLM is imported anywhere: no accelerator, no hub.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REQUIRE_ENV = "KVOFF_REQUIRE_VLLM"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # The modules here skip at import when vLLM is missing; where vLLM is required, that
    # skip becomes a collection failure carrying the skip's reason.
    report: pytest.CollectReport = yield
    if (
        report.skipped
        and isinstance(collector, pytest.Module)
        and os.environ.get(REQUIRE_ENV) == "1"
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{reason}; {REQUIRE_ENV}=1 makes this a failure"
    return report


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _engine import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("model"))
