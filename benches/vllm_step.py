"""Time per vLLM scheduler step (``schedule()`` + ``update_from_output()``) with vLLM's real
``Scheduler`` and ``OffloadingConnector``, kvoff's spec against vLLM's ``CPUOffloadingSpec``, on
the same multi-turn trace in the same run (run it in the vLLM venv; a benchmark, not a test).

The engine is the model-less one of ``tests/vllm/_engine.py`` (offline, CPU): each step the
scheduler schedules, the worker-side connector moves the blocks (kvoff's worker in both runs:
vLLM's own needs CUDA) and a stand-in model "computes" them. Only the two scheduler calls are
timed, so the connector's scheduler side and the manager are inside the figure and the stand-in
model is not.

The trace: 24 chats sharing one system prompt, 4 turns each; a turn's prompt is the previous
turn's prompt, its 8-token answer and a new user message, so every turn after the first
extends the one before. Turns go round-robin over the chats (every chat's first turn, then
every chat's second, ...), 4 requests in flight: by a chat's next turn the small GPU pool has
reused its blocks, so its prefix comes back from the CPU tier, which holds fewer chunks than
the trace has blocks and so evicts.

The heap is collected and frozen before each timed run, as vLLM's engine core does after
start-up. Times are the calling thread's CPU time (the VM's cores are shared). Each repeat runs
vLLM's spec then kvoff's on fresh engines and checks that both did the same loads, stores and
evictions step by step; the table gives the best total of each and the spread of the
per-repeat ratio (below 1: kvoff's steps are faster).

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
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "vllm"))

from _engine import CHUNK_BYTES, Engine, StepRecord, write_model_dir

ANSWER_TOKENS = 8
SAMPLED = 7  # the token the engine's stand-in model samples
TIER_CHUNKS = 320
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
    # CPU time of this thread: the VM's two cores are shared with other work.
    clock = time.thread_time

    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(clock() - t0)

    return call


def drive(engine: Engine, chats: list[list[list[int]]], concurrency: int) -> list[StepRecord]:
    """Run the trace to the end, turns round-robin over the chats (turn 0 of every chat, then
    turn 1, ...); returns what the tier did, step by step."""
    order = [(c, t) for t in range(len(chats[0])) for c in range(len(chats))]
    done: set[tuple[int, int]] = set()
    in_flight: dict[str, tuple[int, int]] = {}
    records: list[StepRecord] = []

    def submit() -> None:
        c, t = order.pop(0)
        # Chats outnumber the requests in flight, so a chat's turn has finished by its next.
        assert t == 0 or (c, t - 1) in done, "turn sent before the one it extends finished"
        req_id = f"c{c}t{t}"
        engine.add(req_id, chats[c][t], max_tokens=ANSWER_TOKENS)
        in_flight[req_id] = (c, t)

    while order and len(in_flight) < concurrency:
        submit()
    seen_finished = 0
    for _ in range(100_000):
        records.append(engine.step())
        for req_id in engine.finished[seen_finished:]:
            done.add(in_flight.pop(req_id))
            if order:
                submit()
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
