"""Block manager bookkeeping: kvoff's Rust manager against the pure-Python reference model
(tests/reference_manager.py, same semantics) on the same trace.

Each timed call handles one batch of 1024 block hashes (a 16k-token request at 16 tokens per
block) against a tier holding 10^4, 10^5 or 10^6 ready blocks:
- lookup / touch: a random contiguous run of resident hashes (a new run every round, so the
  caches are as cold as a real scheduler's);
- prepare_store: 1024 new hashes into a full tier, so each call also evicts 1024 blocks;
- complete_store: the stores just prepared (untimed) become ready.

Input forms: "bytes" (a list of 32-byte hashes, both implementations), "int" (a list of
63-bit ints, both), and kvoff's batched "int64-array" (a numpy int64 array of the same ints;
the reference model gets the list). Run against a release build:

    maturin develop --release
    pytest benches/bench_manager.py --benchmark-enable --benchmark-disable-gc \
        --benchmark-json=.benchmarks/manager.json
    python benches/manager_table.py .benchmarks/manager.json
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from kvoff import OffloadingManager
from reference_manager import ReferenceManager

BATCH = 1024
ROUNDS = 100
SIZES = [10**4, 10**5, 10**6]
OPS = ["lookup", "touch", "prepare_store", "complete_store"]
# (key type, implementation, input form)
FORMS = [
    ("bytes", "reference", "bytes"),
    ("bytes", "kvoff", "bytes"),
    ("int", "reference", "int"),
    ("int", "kvoff", "int"),
    ("int", "kvoff", "int64-array"),
]
IMPLS: dict[str, Callable[..., Any]] = {"kvoff": OffloadingManager, "reference": ReferenceManager}


class Tier:
    """A full tier of `n` ready blocks, plus a stream of fresh hashes for stores."""

    def __init__(self, impl: str, n: int, key_type: str) -> None:
        self.rng = random.Random(n)
        self.key_type = key_type
        self.keys = [self.new_key() for _ in range(n)]
        self.m = IMPLS[impl](n, policy="lru")
        for i in range(0, n, BATCH):
            batch = self.keys[i : i + BATCH]
            self.m.prepare_store(batch)
            self.m.complete_store(batch)
        assert self.m.resident == n and self.m.free == 0
        self.pending: list[Any] | None = None

    def new_key(self) -> bytes | int:
        if self.key_type == "bytes":
            return self.rng.randbytes(32)
        return self.rng.getrandbits(63)

    def resident_run(self) -> list[Any]:
        # Stores evict from the LRU end, so only the lookup/touch tier is kept unchanged.
        start = self.rng.randrange(len(self.keys) - BATCH)
        return self.keys[start : start + BATCH]

    def fresh_batch(self) -> list[Any]:
        return [self.new_key() for _ in range(BATCH)]


_cache: dict[tuple[str, int, str, str], Tier] = {}


def tier(impl: str, n: int, key_type: str, role: str) -> Tier:
    """One tier per (implementation, size, key type, role); only the latest group is kept, so
    10^6-block tiers of both implementations are never all alive at once."""
    key = (impl, n, key_type, role)
    if key not in _cache:
        stale = [k for k in _cache if k[:3] != key[:3]]
        for k in stale:
            del _cache[k]
        gc.collect()
        _cache[key] = Tier(impl, n, key_type)
    return _cache[key]


CASES = [
    pytest.param(n, key_type, impl, form, op, id=f"{op}-{form}-{impl}-{n}")
    for n in SIZES
    for key_type, impl, form in FORMS
    for op in OPS
]


@pytest.mark.parametrize(("n", "key_type", "impl", "form", "op"), CASES)
def test_manager_op(benchmark: Any, n: int, key_type: str, impl: str, form: str, op: str) -> None:
    def as_input(keys: list[Any]) -> Any:
        return np.array(keys, dtype=np.int64) if form == "int64-array" else keys

    if op in ("lookup", "touch"):
        t = tier(impl, n, key_type, "read")
        method = getattr(t.m, op)

        def setup() -> tuple[tuple[Any], dict[str, Any]]:
            return (as_input(t.resident_run()),), {}

    else:
        t = tier(impl, n, key_type, "write")

        def setup() -> tuple[tuple[Any], dict[str, Any]]:
            # Leave the tier full of ready blocks, then (for complete_store) prepare a batch.
            if t.pending is not None:
                t.m.complete_store(t.pending)
                t.pending = None
            batch = as_input(t.fresh_batch())
            if op == "complete_store":
                out = t.m.prepare_store(batch)
                assert out is not None
            t.pending = batch
            return (batch,), {}

        method = t.m.prepare_store if op == "prepare_store" else t.m.complete_store

    benchmark.group = f"manager {op} n={n}"
    benchmark.extra_info.update(
        {"op": op, "impl": impl, "form": form, "resident": n, "blocks_per_call": BATCH}
    )
    result = benchmark.pedantic(method, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    if op == "lookup":
        assert result == BATCH
    if op == "prepare_store":
        assert result is not None and len(result.block_hashes_evicted) == BATCH
    assert t.m.resident == n
