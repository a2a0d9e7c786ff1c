"""Under KVOFF_REQUIRE_VLLM=1 a tests/vllm module that skips for want of vLLM fails instead.

Runs tests/vllm/conftest.py in a scratch directory against a module that skips at import the
way tests/vllm's modules do, so it checks the hook whether or not vLLM is installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

SKIPPING_MODULE = """
import pytest

pytest.importorskip("kvoff_no_such_module", reason="needs vLLM 0.33.0 (test stand-in)")


def test_never_runs():
    raise AssertionError("collected although its import skipped")
"""


def run_pytest(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_vllm.py").write_text(SKIPPING_MODULE)
    (tmp_path / "test_other.py").write_text("def test_runs():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not kvoff's configuration
    env = {k: v for k, v in os.environ.items() if k != "KVOFF_REQUIRE_VLLM"}
    if require is not None:
        env["KVOFF_REQUIRE_VLLM"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("require", [None, "0"])
def test_a_missing_vllm_skips_by_default(tmp_path: Path, require: str | None) -> None:
    proc = run_pytest(tmp_path, require)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout
    assert "needs vLLM 0.33.0 (test stand-in)" in proc.stdout


def test_a_missing_vllm_fails_when_required(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # pytest's "collection errors"
    assert (
        "needs vLLM 0.33.0 (test stand-in); KVOFF_REQUIRE_VLLM=1 makes this a failure"
        in proc.stdout
    )
    # A collection error stops the session before any test runs: the run fails at once.
    assert "Interrupted: 1 error during collection" in proc.stdout
    assert "never_runs" not in proc.stdout
