"""Tests of kvoff inside vLLM. They need vLLM 0.33.0 (``pip install 'kvoff[vllm]'``, or the
separate venv the README names); without it every module here is skipped, saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before vLLM is imported anywhere: no accelerator, no hub.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _engine import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("model"))
