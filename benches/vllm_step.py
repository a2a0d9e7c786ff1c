"""Time per vLLM scheduler step (``schedule()`` + ``update_from_output()``) with vLLM's real
``Scheduler`` and ``OffloadingConnector``, kvoff's spec against vLLM's ``CPUOffloadingSpec``, on
the same multi-turn trace in the same run (run it in the vLLM venv; a benchmark, not a test).

The engine is the model-less one of ``tests/vllm/_engine.py`` (offline, CPU): each step the
scheduler schedules, the worker-side connector moves the blocks (kvoff's worker in both runs:
vLLM's own needs CUDA) and a stand-in model "computes" them. Only the two scheduler calls are
timed, so the connector's scheduler side and the manager are inside the figure and the stand-in
model is not.

The trace: ``conversations`` chats sharing one system prompt, ``turns`` turns each; a turn's
prompt is the previous turn's prompt, its 8-token answer and a new user message, so every turn
after the first hits the prefix of the one before. At most ``concurrency`` chats are in
flight; a chat sends its next turn when its previous one finishes. The CPU tier holds fewer
chunks than the trace's blocks, so it evicts, and the GPU pool is small enough that turns come
back from the CPU tier.

The heap is collected and frozen before each timed run, as vLLM's engine core does after
start-up. Each repeat runs vLLM's spec then kvoff's on fresh engines; the table gives the
total per run, the best and the spread of the per-repeat ratio.

    PYTHONPATH=python /work/vllm-venv/bin/python benches/vllm_step.py [repeats]
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before vLLM is imported: no accelerator, no hub.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "vllm"))

from _engine import CHUNK_BYTES, Engine, StepRecord, write_model_dir

ANSWER_TOKENS = 8
SAMPLED = 7  # the token the engine's stand-in model samples
TIER_CHUNKS = 192
GPU_BLOCKS = 96


def tokens(seed: int, n: int) -> list[int]:
    return [(seed * 131 + i * 7) % 900 + 50 for i in range(n)]


def conversations(n: int, turns: int) -> list[list[list[int]]]:
    """Each chat's prompts, turn by turn."""
    system = tokens(1, 100)
    chats = []
    for c in range(n):
        prompt = [*system, *tokens(1000 + c, 40 + (c * 37) % 90)]
        chat = []
        for t in range(turns):
            chat.append(prompt)
            prompt = [*prompt, *[SAMPLED] * ANSWER_TOKENS, *tokens(5000 + 97 * c + t, 60)]
        chats.append(chat)
    return chats


def timed(fn: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    clock = time.perf_counter

    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(clock() - t0)

    return call


def drive(engine: Engine, chats: list[list[list[int]]], concurrency: int) -> list[StepRecord]:
    """Run the trace to the end; returns what the tier did, step by step."""
    waiting = list(range(len(chats)))
    next_turn = [0] * len(chats)
    in_flight: dict[str, int] = {}
    records: list[StepRecord] = []

    def submit(c: int) -> None:
        req_id = f"c{c}t{next_turn[c]}"
        engine.add(req_id, chats[c][next_turn[c]], max_tokens=ANSWER_TOKENS)
        next_turn[c] += 1
        in_flight[req_id] = c

    while waiting and len(in_flight) < concurrency:
        submit(waiting.pop(0))
    seen_finished = 0
    for _ in range(100_000):
        records.append(engine.step())
        for req_id in engine.finished[seen_finished:]:
            c = in_flight.pop(req_id)
            if next_turn[c] < len(chats[c]):
                submit(c)
            elif waiting:
                submit(waiting.pop(0))
        seen_finished = len(engine.finished)
        if not in_flight and not engine.connector.has_pending_push_work():
            return records
    raise AssertionError("the trace did not finish")


def run_once(
    model_dir: Path, extra: dict[str, Any], chats: list[list[list[int]]], concurrency: int
) -> tuple[float, int, list[StepRecord]]:
    engine = Engine(model_dir, extra, num_gpu_blocks=GPU_BLOCKS)
    spent: list[float] = []
    sched = engine.scheduler
    sched.schedule = timed(sched.schedule, spent)  # type: ignore[method-assign]
    sched.update_from_output = timed(sched.update_from_output, spent)  # type: ignore[method-assign]
    gc.collect()
    gc.freeze()
    records = drive(engine, chats, concurrency)
    return sum(spent), len(records), records


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    chats = conversations(24, 4)
    concurrency = 4
    model_dir = write_model_dir(Path(tempfile.mkdtemp()) / "model")
    print(
        f"{len(chats)} chats x {len(chats[0])} turns, {concurrency} in flight, "
        f"CPU tier {TIER_CHUNKS} chunks, GPU {GPU_BLOCKS} blocks, {repeats} repeats"
    )
    print(
        "policy | steps | loads/stores/evictions | vLLM best ms | kvoff best ms | "
        "kvoff/vLLM of bests | per repeat (min-median-max)"
    )
    for policy in ("lru", "arc"):
        base = {"cpu_bytes_to_use": TIER_CHUNKS * CHUNK_BYTES, "eviction_policy": policy}
        ours = {**base, "spec_name": "KvoffOffloadingSpec", "spec_module_path": "kvoff.vllm"}
        times: dict[str, list[float]] = {"vllm": [], "kvoff": []}
        for _ in range(repeats):
            t_v, steps, rec_v = run_once(model_dir, base, chats, concurrency)
            t_k, _, rec_k = run_once(model_dir, ours, chats, concurrency)
            # The same work, step by step, or the comparison means nothing.
            assert rec_v == rec_k, f"{policy}: the two runs differ"
            times["vllm"].append(t_v)
            times["kvoff"].append(t_k)
        loads = sum(len(r.loads) for r in rec_v)
        stores = sum(len(r.stores) for r in rec_v)
        evicted = sum(len(r.removed) for r in rec_v)
        ratios = sorted(k / v for v, k in zip(times["vllm"], times["kvoff"], strict=True))
        best_v, best_k = min(times["vllm"]), min(times["kvoff"])
        print(
            f"{policy} | {steps} | {loads}/{stores}/{evicted} | {best_v * 1e3:.0f} | "
            f"{best_k * 1e3:.0f} | {best_k / best_v:.3f} | "
            f"{ratios[0]:.3f}-{statistics.median(ratios):.3f}-{ratios[-1]:.3f}"
        )


if __name__ == "__main__":
    main()
