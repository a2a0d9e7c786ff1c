"""``kvoff bench --tp N``: one scheduler, N rank processes (CPU tensors here), each with its
shard of the KV heads. Every load is verified on every rank, the ranks' figures add up exactly
to the totals (summary and /metrics alike), and a rank that dies fails its transfers and ends
the run with an error, the tier serving nothing after it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from _bench_run import SMALL_RUN, free_port, kvoff, scrape, start_bench, wait_for_summary
from kvoff._core import StatsAccumulator
from kvoff.bench.numa import numa_node, pci_address
from kvoff.bench.presets import PRESETS
from kvoff.bench.ranks import RANK_EXIT_ENV, RANK_EXIT_STATUS
from kvoff.bench.shard import KvShard, ShardConfig
from kvoff.bench.workload import block_hashes
from kvoff.cli import main

TINY_BYTES_PER_TOKEN = 2 * 2 * 2 * 16 * 2  # K/V x 2 layers x 2 heads x dim 16 x bf16
GPU_BLOCK_BYTES = 16 * TINY_BYTES_PER_TOKEN
DIRECTIONS = ("GPU_to_CPU", "CPU_to_GPU")
COUNTS = ("ops", "failed_ops", "blocks", "bytes")
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tensors: deterministic")


def _summary(run: Any) -> dict[str, Any]:
    return dict(json.loads(run.stdout[run.stdout.index("{") :]))


@pytest.fixture(scope="module")
def tp2() -> dict[str, Any]:
    run = kvoff("bench", *SMALL_RUN, "--tp", "2", "--device", "cpu", "--json", "-")
    assert run.returncode == 0, run.stderr
    assert "0 mismatched" in run.stdout
    return _summary(run)


def test_tp2_ranks_add_up_to_the_totals(tp2: dict[str, Any]) -> None:
    s = tp2
    assert s["tp"] == 2 and [r["rank"] for r in s["ranks"]] == [0, 1]
    assert s["requests"] == 160 and s["rank_failures"] == []
    for d in DIRECTIONS:
        total = s["transfers"][d]
        ranks = [r["transfers"][d] for r in s["ranks"]]
        for key in COUNTS:
            assert total[key] == sum(r[key] for r in ranks), (d, key)
        # Every rank runs every transfer, on its half of the heads.
        assert ranks[0]["ops"] == ranks[1]["ops"] > 0
        for r in ranks:
            assert r["failed_ops"] == 0
            assert r["bytes"] == r["blocks"] * GPU_BLOCK_BYTES // 2
    # Every load was verified on each rank against that rank's fingerprints.
    load_blocks = s["transfers"]["CPU_to_GPU"]["blocks"] // 2
    assert s["verify_failures"] == 0 and s["blocks_verified"] == load_blocks > 0
    for r in s["ranks"]:
        assert (r["blocks_verified"], r["verify_failures"]) == (load_blocks, 0)
        assert (r["kv_heads"], r["device"], r["failed"]) == (1, "cpu", False)
        assert r["numa_node"] is None and r["pci_address"] is None
    assert s["ranks"][0]["pid"] != s["ranks"][1]["pid"]


@CPU_ONLY
def test_tp2_schedules_exactly_as_one_rank(tp2: dict[str, Any]) -> None:
    """On CPU tensors every transfer completes within its step on every rank, so the
    scheduler sees the same history with two ranks as with one."""
    run = kvoff("bench", *SMALL_RUN, "--json", "-")
    assert run.returncode == 0, run.stderr
    one = _summary(run)
    assert one["tp"] == 1 and len(one["ranks"]) == 1
    for key in ("blocks_queried", "blocks_hit", "evictions", "blocks_stored", "tokens_from_cpu"):
        assert tp2[key] == one[key], key
    for d in DIRECTIONS:
        assert tp2["transfers"][d]["bytes"] == one["transfers"][d]["bytes"]
        assert tp2["transfers"][d]["ops"] == 2 * one["transfers"][d]["ops"]
        assert one["ranks"][0]["transfers"][d]["bytes"] == one["transfers"][d]["bytes"]


def test_tp2_metrics_show_totals_and_ranks(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "summary.json"
    proc = start_bench(out, port, 30, "--tp", "2", "--device", "cpu")
    try:
        s = wait_for_summary(proc, out, timeout=180)
        m = scrape(port)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)

    def val(name: str, engine: str, d: str) -> float:
        labels = (("direction", d), ("engine", engine), ("model_name", "tiny"))
        return m[(name, labels)]

    for d in DIRECTIONS:
        assert val("kvoff_transfer_bytes_total", "0", d) == s["transfers"][d]["bytes"]
        assert val("kvoff_transfer_ops_total", "0", d) == s["transfers"][d]["ops"]
        for r in s["ranks"]:
            rank = str(r["rank"])
            assert val("kvoff_rank_transfer_bytes_total", rank, d) == r["transfers"][d]["bytes"]
            assert val("kvoff_rank_transfer_ops_total", rank, d) == r["transfers"][d]["ops"]
        assert sum(val("kvoff_rank_transfer_bytes_total", str(r), d) for r in (0, 1)) == val(
            "kvoff_transfer_bytes_total", "0", d
        )


def test_dead_rank_fails_its_transfers_and_the_run() -> None:
    run = kvoff(
        "bench", *SMALL_RUN, "--tp", "2", "--device", "cpu", "--json", "-",
        env={RANK_EXIT_ENV: "1:40"},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    s = _summary(run)
    [failure] = s["rank_failures"]
    assert failure["rank"] == 1 and failure["step"] == 41
    assert failure["reason"].endswith(f"exited with status {RANK_EXIT_STATUS}")
    error = [line for line in run.stderr.splitlines() if "error" in line]
    assert error == [
        f"kvoff bench: error: {failure['reason']} at step 41: its "
        f"{failure['transfers_failed']} transfers in flight failed and the CPU tier served "
        "nothing after it"
    ]
    # Step 41's stores never reached rank 1: they failed, and none of their blocks is in the
    # tier. Blocks that are in it are not served either.
    assert failure["transfers_failed"] > 0 and failure["store_blocks_failed"] > 0
    assert failure["store_blocks_resident_after"] == 0
    assert failure["probe_blocks_in_tier"] > 0 and failure["probe_tokens_served"] == 0
    # The admitted requests finished, the rest were dropped; what was loaded was verified.
    assert 0 < s["requests"] < 160
    assert s["verify_failures"] == 0
    dead, alive = s["ranks"][1], s["ranks"][0]
    assert dead["failed"] and dead["verify_failures"] is None
    assert not alive["failed"] and alive["verify_failures"] == 0
    for d in DIRECTIONS:
        # Rank 1's figures stop at its death; the totals are still exactly the sum.
        for key in COUNTS:
            assert s["transfers"][d][key] == alive["transfers"][d][key] + dead["transfers"][d][key]


def test_tp_must_divide_the_heads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--preset", "tiny", "--tp", "3", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "kvoff bench: error: --tp 3: preset tiny has 2 KV heads, which do not split 3 ways\n"
    )


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="needs fewer than two GPUs")
def test_tp_on_cuda_needs_a_gpu_per_rank(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--preset", "tiny", "--tp", "2", "--device", "cuda"]) == 2
    _, err = capsys.readouterr()
    if torch.cuda.is_available():
        assert err.endswith("--device cuda --tp 2: one GPU per rank, but only 1 found\n")
    else:
        assert err == "kvoff bench: error: --device cuda: no CUDA device is available\n"


def test_a_block_from_another_rank_fails_verification() -> None:
    """Each rank's fingerprints differ, so a shard copied to the wrong rank is caught."""
    cfg = ShardConfig(PRESETS["tiny"], 8, 4, 16, 64, "cpu", rank=0, tp=2)
    ranks = [KvShard(cfg, StatsAccumulator()), KvShard(replace(cfg, rank=1), StatsAccumulator())]
    ids = np.array([3, 5], dtype=np.int64)
    hashes = block_hashes(np.arange(32, dtype=np.int32), 16)
    for shard in ranks:
        shard.compute([(ids, hashes)])
        shard.verify((ids, hashes))
    assert [s.mismatches() for s in ranks] == [0, 0]
    for mine, theirs in zip(ranks[1].kv, ranks[0].kv, strict=True):
        mine.copy_(theirs)  # rank 1 now holds rank 0's shard
    ranks[1].verify((ids, hashes))
    assert ranks[1].mismatches() == 2 * 2 * 2  # 2 blocks x 2 layers x K and V
    assert ranks[1].blocks_verified == 4


def test_numa_node_from_sysfs(tmp_path: Path) -> None:
    assert pci_address(0, 0x3B, 0) == "0000:3b:00.0"
    (tmp_path / "0000:3b:00.0").mkdir()
    (tmp_path / "0000:3b:00.0" / "numa_node").write_text("1\n")
    (tmp_path / "0000:86:00.0").mkdir()
    (tmp_path / "0000:86:00.0" / "numa_node").write_text("-1\n")
    assert numa_node("0000:3b:00.0", tmp_path) == 1
    assert numa_node("0000:86:00.0", tmp_path) is None  # the platform gives no node
    assert numa_node("0000:00:00.0", tmp_path) is None  # no such device
