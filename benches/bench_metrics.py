"""Metrics cost per interval: kvoff's snapshot exporter against per-transfer prometheus_client
metrics (how vLLM's offloading connector feeds ``vllm:kv_offload_*``: one histogram observe and
two counter increments per transfer), and the cost of one scrape of each.

Run: pytest benches/bench_metrics.py --benchmark-enable
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from kvoff.metrics import OffloadPromMetrics
from stats_dicts import Transfer, v1_dict

VLLM_BUCKETS = [1e6, 5e6, 1e7, 2e7, 4e7, 6e7, 8e7, 1e8, 1.5e8, 2e8]
DIRECTIONS = ("GPU_to_CPU", "CPU_to_GPU")


def scripted_transfers(n: int) -> list[Transfer]:
    rng = random.Random(n)
    return [
        Transfer(
            DIRECTIONS[i % 2],
            rng.choice([2_097_152, 16_777_216, 134_217_728]),
            rng.randrange(50_000, 5_000_000),
            blocks=rng.randrange(1, 64),
        )
        for i in range(n)
    ]


def count_samples(registry: CollectorRegistry) -> int:
    return sum(len(family.samples) for family in registry.collect())


class PerTransferMetrics:
    """The baseline: prometheus_client metrics updated once per transfer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model_name", "engine", "transfer_type"]
        self.total_bytes = Counter("b_total_bytes", "", labels, registry=registry)
        self.total_time = Counter("b_total_time", "", labels, registry=registry)
        self.size = Histogram("b_size", "", labels, buckets=VLLM_BUCKETS, registry=registry)

    def observe(self, ops: list[tuple[str, int, float]]) -> None:
        for transfer_type, nbytes, seconds in ops:
            labels = ("m", "0", transfer_type)
            self.size.labels(*labels).observe(nbytes)
            self.total_bytes.labels(*labels).inc(nbytes)
            self.total_time.labels(*labels).inc(seconds)


@pytest.mark.parametrize("n", [10, 1_000, 100_000])
def test_ingest_kvoff_snapshot(benchmark: Any, n: int) -> None:
    snapshot = v1_dict(scripted_transfers(n))
    exporter = OffloadPromMetrics(
        CollectorRegistry(), labels={"model_name": "m"}, vllm_compatible=True
    )
    benchmark.group = f"metrics ingest, one interval of {n} transfers"
    benchmark.extra_info.update(transfers=n, approach="kvoff observe(snapshot)")
    benchmark(exporter.observe, snapshot)


@pytest.mark.parametrize("n", [10, 1_000, 100_000])
def test_ingest_per_transfer_baseline(benchmark: Any, n: int) -> None:
    ops = [(t.direction, t.nbytes, t.ns / 1e9) for t in scripted_transfers(n)]
    baseline = PerTransferMetrics(CollectorRegistry())
    benchmark.group = f"metrics ingest, one interval of {n} transfers"
    benchmark.extra_info.update(transfers=n, approach="per-transfer prometheus_client")
    benchmark(baseline.observe, ops)


def test_scrape_kvoff(benchmark: Any) -> None:
    registry = CollectorRegistry()
    exporter = OffloadPromMetrics(registry, labels={"model_name": "m"}, vllm_compatible=True)
    exporter.observe(v1_dict(scripted_transfers(1_000)))
    benchmark.group = "metrics scrape (generate_latest)"
    benchmark.extra_info.update(
        approach="kvoff collector, all families, vllm_compatible", samples=count_samples(registry)
    )
    benchmark(generate_latest, registry)


def test_scrape_per_transfer_baseline(benchmark: Any) -> None:
    registry = CollectorRegistry()
    baseline = PerTransferMetrics(registry)
    baseline.observe([(t.direction, t.nbytes, t.ns / 1e9) for t in scripted_transfers(1_000)])
    benchmark.group = "metrics scrape (generate_latest)"
    benchmark.extra_info.update(
        approach="prometheus_client metrics, vLLM's 3 families only",
        samples=count_samples(registry),
    )
    benchmark(generate_latest, registry)
