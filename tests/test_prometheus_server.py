"""A real Prometheus server scrapes ``kvoff bench --metrics-port`` and PromQL over its HTTP API
returns the bench's totals.

Needs the ``prometheus`` binary (Debian's ``prometheus`` package; the README's test command and
``.ci/run`` install it). Without it the test fails rather than skips, unless
``KVOFF_SKIP_PROMETHEUS=1`` says so explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _bench_run import free_port, start_bench, wait_for_summary

pytestmark = pytest.mark.prometheus

PROMETHEUS = shutil.which("prometheus")
if PROMETHEUS is None and os.environ.get("KVOFF_SKIP_PROMETHEUS") == "1":
    pytest.skip(
        "prometheus binary not installed (KVOFF_SKIP_PROMETHEUS=1)", allow_module_level=True
    )


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


class Prometheus:
    def __init__(self, tmp: Path, target_port: int) -> None:
        assert PROMETHEUS is not None, (
            "the prometheus binary is missing: install Debian's 'prometheus' package "
            "(or set KVOFF_SKIP_PROMETHEUS=1 to skip this test)"
        )
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: kvoff\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("prometheus did not become ready in 30 s")

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = _get(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}")
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def prometheus_and_bench(tmp_path: Path) -> Iterator[tuple[Prometheus, dict[str, Any]]]:
    bench_port = free_port()
    prom = Prometheus(tmp_path, bench_port)
    out = tmp_path / "summary.json"
    bench = start_bench(out, bench_port, linger=60)
    try:
        summary = wait_for_summary(bench, out, timeout=120)
        # The bench has finished and serves its final totals; wait until Prometheus has
        # scraped them (it scrapes every second).
        want = summary["transfers"]["GPU_to_CPU"]["bytes"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if prom.scalar('kvoff_transfer_bytes_total{direction="GPU_to_CPU"}') == want:
                break
            time.sleep(0.25)
        yield prom, summary
    finally:
        bench.terminate()
        bench.communicate(timeout=30)
        prom.stop()


def test_promql_returns_the_bench_totals(
    prometheus_and_bench: tuple[Prometheus, dict[str, Any]],
) -> None:
    prom, s = prometheus_and_bench
    up = prom.query('up{job="kvoff"}')
    assert [r["value"][1] for r in up] == ["1"]
    for d in ("GPU_to_CPU", "CPU_to_GPU"):
        t = s["transfers"][d]
        sel = f'{{direction="{d}",engine="0",model_name="tiny"}}'
        assert prom.scalar(f"kvoff_transfer_bytes_total{sel}") == t["bytes"]
        assert prom.scalar(f"kvoff_transfer_ops_total{sel}") == t["ops"]
        assert prom.scalar(f"kvoff_transfer_size_bytes_count{sel}") == t["ops"]
        assert prom.scalar(f"kvoff_transfer_seconds_total{sel}") == pytest.approx(t["seconds"])
    assert prom.scalar("sum(kvoff_lookup_blocks_total)") == s["blocks_queried"]
    assert prom.scalar("sum(kvoff_lookup_hit_blocks_total)") == s["blocks_hit"]
    assert prom.scalar(
        "sum(kvoff_lookup_hit_blocks_total) / sum(kvoff_lookup_blocks_total)"
    ) == pytest.approx(s["block_hit_rate"])
    assert prom.scalar("kvoff_cpu_blocks_evicted_total") == s["evictions"]
    assert prom.scalar("kvoff_cpu_allocation_failures_total") == s["allocation_failures"]
    assert prom.scalar("kvoff_cpu_capacity_blocks") == s["cpu_capacity_blocks"]
    # Every transfer is smaller than the largest size bucket: the +Inf bucket equals the count.
    assert (
        prom.scalar('sum(kvoff_transfer_size_bytes_bucket{le="+Inf"})')
        == s["transfers"]["GPU_to_CPU"]["ops"] + s["transfers"]["CPU_to_GPU"]["ops"]
    )
