"""``kvoff bench --remote URL`` as a user runs it (subprocesses) against a real redis-server:
two benches with small CPU tiers share one server and the second is served the first's blocks
from the remote tier, every load checked against its fingerprints; a server that is not there
costs the bench nothing but remote errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _redis_proc import RedisServer, free_port

from _bench_run import kvoff, scrape, wait_for_summary

PASSWORD = "s3cr3t-Pw"
CPU_BLOCK_TOKENS = 64
# The tiny preset, a 65-block CPU tier (so most of a conversation's earlier turns are evicted
# before it comes back) and 40 requests: a few seconds per run on two cores.
RUN = [
    "bench", "--preset", "tiny", "--requests", "40", "--cpu-gb", "0.001",
    "--gpu-blocks", "512", "--seed", "11", "--no-progress",
]  # fmt: skip


def bench(url: str, json_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    run = kvoff(*RUN, "--remote", url, "--json", str(json_path), *extra, timeout=300)
    assert run.returncode == 0, run.stderr
    text = json_path.read_text()
    return json.loads(text), run.stdout + run.stderr + text


def check_loads(s: dict[str, Any]) -> None:
    """Every block served (from either tier) was loaded and verified, none mismatched, and the
    tiers' shares add up to what was loaded."""
    r = s["remote"]
    assert s["verify_failures"] == 0 and s["failed_loads"] == 0
    assert s["blocks_verified"] * 16 == s["tokens_from_cpu"]
    assert r["tokens_hit_cpu"] == r["blocks_hit_cpu"] * CPU_BLOCK_TOKENS
    assert r["tokens_hit_remote"] == r["blocks_hit_remote"] * CPU_BLOCK_TOKENS
    assert r["tokens_hit_cpu"] + r["tokens_hit_remote"] == s["tokens_from_cpu"]
    for rank in s["ranks"]:
        assert rank["verify_failures"] == 0 and rank["blocks_verified"] == s["blocks_verified"]


@pytest.mark.parametrize("tp", [1, 2])
def test_a_second_bench_is_served_the_first_ones_blocks_from_redis(
    server_factory: Callable[..., RedisServer], tmp_path: Path, tp: int
) -> None:
    server = server_factory({"requirepass": PASSWORD})
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    first, first_text = bench(url, tmp_path / "first.json", "--tp", str(tp))
    a = first["remote"]
    check_loads(first)
    # Everything the first bench offered reached the server before it exited.
    assert a["errors_total"] == 0 and a["writes_dropped"] == 0 and a["writes_failed"] == 0
    assert a["writes_unsettled_at_exit"] == 0
    assert a["writes_written"] > 0
    # Each rank writes its own shard of a block under its own key.
    assert int(server.cli("DBSIZE")) == a["writes_written"]
    assert a["writes_enqueued"] == a["writes_written"] + a["writes_skipped_existing"]

    second, second_text = bench(url, tmp_path / "second.json", "--tp", str(tp))
    b = second["remote"]
    check_loads(second)
    assert b["errors_total"] == 0 and b["fetch_failed_ops"] == 0 and b["failed_fetch_blocks"] == 0
    # The same workload: the second bench's stores are mostly blocks the first wrote already,
    # and much of what it serves comes from the remote tier.
    assert b["writes_skipped_existing"] > 0
    assert 0 < b["blocks_hit_remote"] <= b["fetched_blocks"]
    assert b["blocks_hit_remote"] > a["blocks_hit_remote"]
    assert second["tokens_from_cpu"] > first["tokens_from_cpu"]
    assert int(server.cli("DBSIZE")) == a["writes_written"] + b["writes_written"]
    for text in (first_text, second_text):
        assert PASSWORD not in text
        assert f"redis://:***@127.0.0.1:{server.port}/0" in text


def test_a_bench_whose_redis_is_not_there_finishes_on_the_cpu_tier(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    s, text = bench(f"redis://127.0.0.1:{port}/0", tmp_path / "dead.json")
    r = s["remote"]
    check_loads(s)
    assert s["requests"] == 40
    assert r["blocks_hit_remote"] == 0 and r["tokens_hit_remote"] == 0
    assert r["blocks_hit_cpu"] > 0
    assert r["fetch_ops"] == 0 and r["write_ops"] == 0 and r["writes_written"] == 0
    assert r["errors"]["connection"] > 0
    assert r["errors_total"] == r["errors"]["connection"]
    # What was offered failed or was dropped, and nothing stayed pinned.
    assert r["writes_failed"] + r["writes_dropped"] == r["writes_enqueued"] == r["writes_offered"]
    assert r["writes_unsettled_at_exit"] == 0
    (line,) = [x for x in text.splitlines() if x.startswith("remote errors ")]
    n = r["errors_total"]
    assert line.split(None, 2)[2].startswith(f"{n} (connection {n}); ")


@pytest.mark.parametrize("tp", [1, 2])
def test_the_second_benchs_metrics_show_what_redis_served_it(
    server_factory: Callable[..., RedisServer], tmp_path: Path, tp: int
) -> None:
    server = server_factory()
    url = server.url
    bench(url, tmp_path / "first.json", "--tp", str(tp))
    port = free_port()
    json_path = tmp_path / "second.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvoff", *RUN, "--remote", url, "--json", str(json_path),
         "--tp", str(tp), "--metrics-port", str(port), "--linger", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        summary = wait_for_summary(proc, json_path, timeout=300)
        series = scrape(port)
    finally:
        proc.kill()
        proc.communicate()
    r = summary["remote"]
    assert r["blocks_hit_remote"] > 0 and r["fetch_ops"] > 0

    def value(name: str, **labels: str) -> float:
        key = tuple(sorted({"engine": "0", "model_name": "tiny", **labels}.items()))
        return series[(name, key)]

    assert value("kvoff_hit_blocks_total", tier="remote") == r["blocks_hit_remote"]
    assert value("kvoff_hit_blocks_total", tier="cpu") == r["blocks_hit_cpu"]
    assert value("kvoff_hit_tokens_total", tier="remote") == r["tokens_hit_remote"]
    fetch = {"direction": "REMOTE_to_CPU"}
    assert value("kvoff_remote_ops_total", **fetch) == r["fetch_ops"]
    assert value("kvoff_remote_bytes_total", **fetch) == r["fetch_bytes"]
    assert value("kvoff_remote_lookup_hit_blocks_total") == r["lookup_blocks_hit"]
    assert value("kvoff_remote_errors_total", kind="connection") == 0
