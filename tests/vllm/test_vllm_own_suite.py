"""vLLM 0.33.0's own offloading tests, from its sdist, run against kvoff's manager.

vllm_sdist.py fetches and verifies vLLM's tests; vllm_suite.py (a pytest plugin) rebinds
``CPUOffloadingManager`` in them to kvoff's manager and deselects, each with its reason, the
tests that cannot run against kvoff. Here the suite runs in a subprocess (cwd the extracted
tree, so vLLM's own conftests and markers apply) and its outcome is checked exactly: every
test that runs passes, nothing skips, the deselected tests are exactly those the plugin lists,
and the tests that build a manager build kvoff's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

import vllm_suite
from vllm_sdist import vllm_tests_tree

import kvoff

HERE = Path(__file__).parent
MANAGER_TESTS = "tests/v1/kv_offload/cpu/test_manager.py::"

# Per vLLM test file: (tests that run and pass, tests deselected) on vLLM 0.33.0.
EXPECTED_COUNTS = {
    "tests/v1/kv_offload/cpu/test_manager.py": (36, 32),
    "tests/v1/kv_offload/cpu/policies/test_factory.py": (6, 2),
    "tests/v1/kv_offload/tiering/test_tier_poll_thread.py": (1, 0),
    "tests/v1/kv_connector/unit/offloading_connector/test_scheduler.py": (324, 119),
    "tests/v1/kv_connector/unit/offloading_connector/test_events.py": (47, 4),
    "tests/v1/kv_connector/unit/offloading_connector/test_metrics.py": (38, 1),
}
# Per vLLM test file: how many of its tests build kvoff's manager (through the rebound name).
EXPECTED_KVOFF_TESTS = {
    "tests/v1/kv_offload/cpu/test_manager.py": 34,
    "tests/v1/kv_offload/tiering/test_tier_poll_thread.py": 1,
    "tests/v1/kv_connector/unit/offloading_connector/test_scheduler.py": 96,
    "tests/v1/kv_connector/unit/offloading_connector/test_events.py": 11,
}
# The tests of test_manager.py that build no manager: they test vLLM's LRUCachePolicy alone.
POLICY_ONLY = {
    MANAGER_TESTS + "test_lru_insert_orders_positioned_chunks_without_followup_access[False]",
    MANAGER_TESTS + "test_lru_insert_orders_positioned_chunks_without_followup_access[True]",
}


@dataclass(frozen=True)
class SuiteRun:
    returncode: int
    output: str
    report: dict[str, Any]  # what vllm_suite wrote: outcomes, deselected, managers built
    junit: dict[str, int]  # the testsuite totals of --junitxml


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def per_file(nodeids: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for nodeid in nodeids:
        counts[file_of(nodeid)] = counts.get(file_of(nodeid), 0) + 1
    return counts


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    tree = vllm_tests_tree()
    out = tmp_path_factory.mktemp("vllm-own-suite")
    # The kvoff this test imports, and the plugin next to this file.
    paths = [str(Path(kvoff.__file__).parent.parent), str(HERE)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(paths),
        VLLM_TARGET_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        **{vllm_suite.REPORT_ENV: str(out / "report.json")},
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *vllm_suite.SUITE,
            "-p",
            "vllm_suite",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            f"--junitxml={out / 'junit.xml'}",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert (out / "report.json").exists(), output[-4000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None, output[-4000:]
    junit = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    return SuiteRun(proc.returncode, output, json.loads((out / "report.json").read_text()), junit)


def test_every_test_that_runs_passes(suite_run: SuiteRun) -> None:
    outcomes = suite_run.report["outcomes"]
    not_passed = {t: o for t, o in outcomes.items() if o != "passed"}
    assert not_passed == {}, suite_run.output[-8000:]
    assert suite_run.returncode == 0, suite_run.output[-8000:]
    assert suite_run.junit == {
        "tests": len(outcomes),
        "failures": 0,
        "errors": 0,
        "skipped": 0,
    }


def test_the_deselected_tests_are_exactly_the_listed_ones(suite_run: SuiteRun) -> None:
    # A listed test that vLLM renamed or removed matches nothing: the list must follow.
    assert suite_run.report["unmatched_entries"] == []
    deselected = suite_run.report["deselected"]
    assert all(
        any(vllm_suite.matches(t, entry) for entry in vllm_suite.DESELECTED) for t in deselected
    )
    assert not set(deselected) & set(suite_run.report["outcomes"])


def test_each_file_runs_and_deselects_what_it_did_on_0_33_0(suite_run: SuiteRun) -> None:
    passed = per_file(suite_run.report["outcomes"])
    deselected = per_file(suite_run.report["deselected"])
    assert {
        f: (passed.get(f, 0), deselected.get(f, 0)) for f in passed.keys() | deselected.keys()
    } == EXPECTED_COUNTS


def test_the_manager_tests_build_kvoffs_manager(suite_run: SuiteRun) -> None:
    built = suite_run.report["kvoff_managers_built"]
    assert per_file(built) == EXPECTED_KVOFF_TESTS
    # Every test of vLLM's manager tests that ran and builds a manager built kvoff's.
    ran = {t for t in suite_run.report["outcomes"] if t.startswith(MANAGER_TESTS)}
    assert ran - POLICY_ONLY == {t for t in built if t.startswith(MANAGER_TESTS)}
