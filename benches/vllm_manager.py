"""Time inside the manager's methods, as vLLM 0.33's connector calls them, for vLLM's
``CPUOffloadingManager`` and kvoff's ``KvoffOffloadingManager`` on the same synthetic trace in
the same run (run it in the vLLM venv; a benchmark, not a test).

The trace: requests sharing prefixes (a pool of prompts), each request: ``on_new_request``,
``lookup`` key by key until the first miss, ``prepare_load``/``complete_load`` of the hits,
``prepare_store``/``complete_store`` of the rest in chunks of 8 keys, ``on_request_finished``.

The heap is collected and frozen (``gc.freeze()``) before the timed runs, as vLLM's engine core
does after start-up: otherwise a full collection of the ~650k objects ``import vllm`` leaves
lands in whichever run happens to cross the threshold and swamps the difference being measured.
Each repeat runs both managers back to back; the table gives the best and the spread.

    PYTHONPATH=python /work/vllm-venv/bin/python benches/vllm_manager.py [requests] [repeats]
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time

from vllm.v1.kv_offload.base import LookupResult, ReqContext, make_offload_key
from vllm.v1.kv_offload.cpu.manager import CPUOffloadingManager

from kvoff.vllm.manager import KvoffOffloadingManager


def trace(n_requests: int, seed: int = 0) -> list[list[bytes]]:
    rng = random.Random(seed)
    prompts = []
    for p in range(64):
        n = rng.randint(16, 128)
        prompts.append(
            [make_offload_key(f"p{p}-{i}".encode().ljust(32, b"."), 0) for i in range(n)]
        )
    out = []
    for r in range(n_requests):
        base = rng.choice(prompts)
        keep = rng.randint(0, len(base))
        tail = [
            make_offload_key(f"r{r}-{i}".encode().ljust(32, b"."), 0)
            for i in range(rng.randint(4, 64))
        ]
        out.append(base[:keep] + tail)
    return out


def run(manager: object, reqs: list[list[bytes]]) -> float:
    m = manager
    t = 0.0
    # CPU time of this thread: the VM's two cores are shared, and wall time would charge the
    # other processes' slices to whichever manager was running.
    clock = time.thread_time
    for r, keys in enumerate(reqs):
        ctx = ReqContext(req_id=str(r))
        for i, k in enumerate(keys):
            ctx.set_offload_key_position(k, (i + 1) * 16)
        t0 = clock()
        m.on_new_request(ctx)
        hits = 0
        for k in keys:
            if m.lookup(k, ctx) is not LookupResult.HIT:
                break
            hits += 1
        if hits:
            m.prepare_load(keys[:hits], ctx)
            m.complete_load(keys[:hits], ctx)
        for s in range(hits, len(keys), 8):
            batch = keys[s : s + 8]
            out = m.prepare_store(batch, ctx)
            if out is not None:
                m.complete_store(set(out.keys_to_store), ctx)
        m.on_request_finished(ctx)
        list(m.take_events())
        t += clock() - t0
    return t


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    reqs = trace(n)
    keys = sum(len(k) for k in reqs)
    gc.collect()
    gc.freeze()
    print(f"{n} requests, {keys} keys, {repeats} repeats (ms in the manager's methods)")
    print("policy | vLLM best | kvoff best | ratio of bests | ratio per repeat (min-median-max)")
    for policy in ("lru", "arc"):
        times: dict[str, list[float]] = {"vllm": [], "kvoff": []}
        for _ in range(repeats):
            vllm_manager = CPUOffloadingManager(2048, cache_policy=policy, enable_events=True)
            times["vllm"].append(run(vllm_manager, reqs))
            kvoff_manager = KvoffOffloadingManager(2048, 16, policy=policy, enable_events=True)
            times["kvoff"].append(run(kvoff_manager, reqs))
        ratios = sorted(v / k for v, k in zip(times["vllm"], times["kvoff"], strict=True))
        best_v, best_k = min(times["vllm"]), min(times["kvoff"])
        print(
            f"{policy} | {best_v * 1e3:.0f} | {best_k * 1e3:.0f} | {best_v / best_k:.2f}x | "
            f"{ratios[0]:.2f}-{statistics.median(ratios):.2f}-{ratios[-1]:.2f}x"
        )


if __name__ == "__main__":
    main()
