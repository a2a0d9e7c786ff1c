"""The same scheduler runs with vLLM's CPUOffloadingSpec and with kvoff's: the loads (CPU ids),
stores (CPU ids) and CPU-tier events must agree step by step.

kvoff's native tier implements vLLM 0.33's semantics, so every scenario, for both policies, must
agree step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from _engine import CHUNK_BYTES, Engine, StepRecord

TIER = 8


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 131 + i * 7) % 900 + 50 for i in range(n)]


def sequential(eng: Engine) -> list[StepRecord]:
    """One request at a time: growth turn by turn, eviction past the tier, repeats."""
    recs: list[StepRecord] = []
    turn = prompt(1, 40)
    for t in range(3):
        eng.add(f"turn{t}", turn)
        recs += eng.run()
        assert eng.scheduler.reset_prefix_cache()
        turn = [*turn, 7, *prompt(2 + t, 25)]
    for i in range(4):
        eng.add(f"other{i}", prompt(10 + i, 3 * 16 + 1))
        recs += eng.run()
        assert eng.scheduler.reset_prefix_cache()
    eng.add("again", prompt(1, 40))
    recs += eng.run()
    return recs


def interleaved(eng: Engine) -> list[StepRecord]:
    """Several requests in flight at once, sharing prefixes, in a tier too small for all."""
    recs: list[StepRecord] = []
    shared = prompt(5, 32)
    for i in range(3):
        eng.add(f"x{i}", [*shared, *prompt(30 + i, 20 + 16 * i)], max_tokens=3)
    eng.add("solo", prompt(40, 50), max_tokens=2)
    for _ in range(3):
        recs.append(eng.step())
    eng.add("late", [*shared, *prompt(50, 33)], max_tokens=2)
    recs += eng.run()
    assert eng.scheduler.reset_prefix_cache()
    eng.add("x0again", [*shared, *prompt(30, 20)])
    eng.add("late_again", [*shared, *prompt(50, 33)])
    recs += eng.run()
    return recs


Scenario = Callable[[Engine], list[StepRecord]]


def run_both(model_dir: Path, scenario: Scenario, policy: str) -> tuple[list, list]:
    base = {"cpu_bytes_to_use": TIER * CHUNK_BYTES, "eviction_policy": policy}
    theirs = Engine(model_dir, base)
    ours = Engine(
        model_dir, {**base, "spec_name": "KvoffOffloadingSpec", "spec_module_path": "kvoff.vllm"}
    )
    assert type(theirs.manager).__name__ == "CPUOffloadingManager"
    assert type(ours.manager).__name__ == "KvoffOffloadingManager"
    return scenario(theirs), scenario(ours)


def assert_same_steps(theirs: list[StepRecord], ours: list[StepRecord]) -> None:
    # The first differing step says more than a length mismatch, so compare steps first.
    for i, (a, b) in enumerate(zip(theirs, ours, strict=False)):
        assert a == b, f"step {i}: vLLM {a} != kvoff {b}"
    assert len(theirs) == len(ours)


def test_lru_sequential_requests_match_vllm(model_dir: Path) -> None:
    theirs, ours = run_both(model_dir, sequential, "lru")
    assert any(r.removed for r in theirs)  # the scenario does evict
    assert any(r.loads for r in theirs)
    assert_same_steps(theirs, ours)


def test_lru_interleaved_requests_match_vllm(model_dir: Path) -> None:
    theirs, ours = run_both(model_dir, interleaved, "lru")
    assert any(r.removed for r in theirs)
    assert_same_steps(theirs, ours)


def test_arc_sequential_requests_match_vllm(model_dir: Path) -> None:
    theirs, ours = run_both(model_dir, sequential, "arc")
    assert any(r.removed for r in theirs)
    assert_same_steps(theirs, ours)


def test_arc_interleaved_requests_match_vllm(model_dir: Path) -> None:
    theirs, ours = run_both(model_dir, interleaved, "arc")
    assert any(r.removed for r in theirs)
    assert_same_steps(theirs, ours)


def overlapping(eng: Engine) -> list[StepRecord]:
    """A long prompt prefilled in chunks while a short request starts and finishes; while the
    long one still decodes, a third request needs room: whose blocks go first."""
    recs: list[StepRecord] = []
    eng.add("short", prompt(60, 33), max_tokens=1)
    eng.add("long", prompt(61, 100), max_tokens=30)
    for _ in range(4):
        recs.append(eng.step())
    assert eng.finished == ["short"]
    eng.add("pressure", prompt(62, 65), max_tokens=1)
    recs += eng.run()
    return recs


def test_lru_overlapping_requests_match_vllm(model_dir: Path) -> None:
    base = {"cpu_bytes_to_use": TIER * CHUNK_BYTES, "eviction_policy": "lru"}
    kvoff_extra = {**base, "spec_name": "KvoffOffloadingSpec", "spec_module_path": "kvoff.vllm"}
    theirs = overlapping(Engine(model_dir, base, max_num_batched_tokens=48))
    ours = overlapping(Engine(model_dir, kvoff_extra, max_num_batched_tokens=48))
    assert any(r.removed for r in theirs)
    assert_same_steps(theirs, ours)
