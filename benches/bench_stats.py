"""Stats cost: kvoff's fixed-size accumulator and snapshot against a baseline that keeps one
Python record per transfer in a list and walks it in reduce() — the shape the first
``vllm:kv_offload_*`` metrics were built on (per-transfer size/time entries per transfer type;
a fact about vLLM's design, not its code).

Run against a release build:
    maturin develop --release && pytest benches/bench_stats.py --benchmark-enable
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from kvoff import OffloadingConnectorStats, StatsAccumulator

SIZES = (10, 1_000, 100_000)
DIRECTIONS = ("GPU_to_CPU", "CPU_to_GPU")


class ListStats:
    """The baseline: one dict per transfer, per direction; every question walks the lists."""

    def __init__(self, data: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.data: dict[str, list[dict[str, Any]]] = data or {d: [] for d in DIRECTIONS}

    def record_transfer(self, direction: str, num_bytes: int, seconds: float) -> None:
        self.data[direction].append({"op_size": num_bytes, "op_time": seconds})

    def take(self) -> ListStats:
        taken = ListStats(self.data)
        self.data = {d: [] for d in DIRECTIONS}
        return taken

    def aggregate(self, other: ListStats) -> ListStats:
        for d, ops in other.data.items():
            self.data[d].extend(ops)
        return self

    def reduce(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        for d, ops in self.data.items():
            total_bytes = sum(op["op_size"] for op in ops)
            total_time = sum(op["op_time"] for op in ops)
            out[f"{d}_total_bytes"] = total_bytes
            out[f"{d}_total_time"] = total_time
            out[f"{d}_ops"] = len(ops)
            out[f"{d}_avg_bytes"] = total_bytes / len(ops) if ops else 0.0
            out[f"{d}_avg_time"] = total_time / len(ops) if ops else 0.0
        return out


def filled(impl: str, n: int) -> Any:
    acc: Any = StatsAccumulator() if impl == "kvoff" else ListStats()
    for i in range(n):
        acc.record_transfer(DIRECTIONS[i % 2], 1_048_576 + i, 1e-3 + i * 1e-9)
    return acc


def setup(benchmark: Any, op: str, impl: str, n: int | None = None) -> None:
    benchmark.group = f"stats {op}" + (f" n={n}" if n is not None else "")
    benchmark.extra_info.update(impl=impl, op=op, transfers=n)


IMPLS = pytest.mark.parametrize("impl", ["kvoff", "list"])
NS = pytest.mark.parametrize("n", SIZES)


@IMPLS
def test_record_one_transfer(benchmark: Any, impl: str) -> None:
    setup(benchmark, "record_transfer", impl)
    acc = filled(impl, 0)
    benchmark(acc.record_transfer, "GPU_to_CPU", 1_048_576, 1e-3)


@IMPLS
@NS
def test_take(benchmark: Any, impl: str, n: int) -> None:
    setup(benchmark, "take", impl, n)
    rounds = 20 if n == 100_000 else 200
    benchmark.pedantic(
        lambda acc: acc.take(), setup=lambda: ((filled(impl, n),), {}), rounds=rounds
    )


@IMPLS
@NS
def test_reduce(benchmark: Any, impl: str, n: int) -> None:
    setup(benchmark, "reduce", impl, n)
    snapshot = filled(impl, n).take()
    result = benchmark(snapshot.reduce)
    assert result["GPU_to_CPU_ops"] + result["CPU_to_GPU_ops"] == n


@IMPLS
@NS
def test_aggregate(benchmark: Any, impl: str, n: int) -> None:
    setup(benchmark, "aggregate", impl, n)
    empty = type(filled(impl, 0).take())
    other = filled(impl, n).take()
    # Into a fresh empty snapshot each call (both sides pay for creating it): summing into one
    # target forever would overflow kvoff's u64 counters, which aggregate() rightly refuses.
    benchmark(lambda: empty().aggregate(other))


@IMPLS
@NS
def test_pickle_round_trip(benchmark: Any, impl: str, n: int) -> None:
    setup(benchmark, "pickle dumps+loads", impl, n)
    snapshot = filled(impl, n).take()
    benchmark.extra_info["pickled_bytes"] = len(pickle.dumps(snapshot))
    back = benchmark(lambda: pickle.loads(pickle.dumps(snapshot)))
    if impl == "kvoff":
        assert isinstance(back, OffloadingConnectorStats) and back == snapshot
