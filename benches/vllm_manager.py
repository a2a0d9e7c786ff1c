"""Time inside the manager's methods, as vLLM 0.33's connector calls them, for vLLM's
``CPUOffloadingManager`` and kvoff's ``KvoffOffloadingManager`` on the same synthetic trace in
the same run (run it in the vLLM venv; a benchmark, not a test).

The trace: requests sharing prefixes (a pool of prompts), each request: ``on_new_request``,
``lookup`` key by key until the first miss, ``prepare_load``/``complete_load`` of the hits,
``prepare_store``/``complete_store`` of the rest in chunks of 8 keys, ``on_request_finished``.

    PYTHONPATH=python /work/vllm-venv/bin/python benches/vllm_manager.py
"""

from __future__ import annotations

import random
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
    clock = time.perf_counter
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
    reqs = trace(n)
    keys = sum(len(k) for k in reqs)
    for policy in ("lru", "arc"):
        best = {}
        for _ in range(3):
            for name, make in (
                (
                    "vllm",
                    lambda p=policy: CPUOffloadingManager(2048, cache_policy=p, enable_events=True),
                ),
                (
                    "kvoff",
                    lambda p=policy: KvoffOffloadingManager(2048, 16, policy=p, enable_events=True),
                ),
            ):
                t = run(make(), reqs)
                best[name] = min(best.get(name, t), t)
        ratio = best["vllm"] / best["kvoff"]
        print(
            f"{policy}: {n} requests, {keys} keys: vLLM {best['vllm'] * 1e3:.1f} ms, "
            f"kvoff {best['kvoff'] * 1e3:.1f} ms, {ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
