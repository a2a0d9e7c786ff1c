"""``kvoff bench`` end to end, as a subprocess: the summary's numbers against each other and
against what its Prometheus exporter serves, and bad arguments."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from _bench_run import SMALL_RUN, free_port, kvoff, scrape, start_bench, wait_for_summary

TINY_BYTES_PER_TOKEN = 2 * 2 * 2 * 16 * 2  # K/V x 2 layers x 2 heads x dim 16 x bf16
GPU_BLOCK_BYTES = 16 * TINY_BYTES_PER_TOKEN
RATIO = 64 // 16  # default CPU / GPU block size


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    run = kvoff("bench", *SMALL_RUN, "--json", "-")
    assert run.returncode == 0, run.stderr
    # stdout: the table, then the JSON summary.
    return json.loads(run.stdout[run.stdout.index("{") :])


def test_summary_numbers_agree(summary: dict[str, Any]) -> None:
    s = summary
    store, load = s["transfers"]["GPU_to_CPU"], s["transfers"]["CPU_to_GPU"]
    assert s["requests"] == 160 and s["requests_rejected"] == 0
    assert s["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    # The workload must exercise the whole tier: hits, evictions, allocation failures.
    assert 0 < s["blocks_hit"] < s["blocks_queried"]
    assert s["evictions"] > 0 and s["allocation_failures"] > 0
    assert s["block_hit_rate"] == pytest.approx(s["blocks_hit"] / s["blocks_queried"])
    # Bytes are whole GPU blocks; every stored CPU block is one store of RATIO GPU blocks.
    for d in (store, load):
        assert d["failed_ops"] == 0
        assert d["bytes"] == d["blocks"] * GPU_BLOCK_BYTES
        assert d["seconds"] > 0 and d["p50_ms"] <= d["p99_ms"]
    assert store["blocks"] == s["blocks_stored"] * RATIO
    # Every token served from the CPU tier arrived in a loaded GPU block, and was verified.
    assert s["tokens_from_cpu"] == load["blocks"] * 16 == s["blocks_verified"] * 16
    assert 0 < s["tokens_from_cpu"] < s["tokens_prompt"]
    assert s["verify_failures"] == 0
    assert s["cpu_capacity_blocks"] == int(0.001 * 2**30) // (64 * TINY_BYTES_PER_TOKEN)


def test_summary_table_is_printed(summary: dict[str, Any]) -> None:
    run = kvoff("bench", *SMALL_RUN)
    assert run.returncode == 0, run.stderr
    assert f"{summary['blocks_hit']}/{summary['blocks_queried']} blocks" in run.stdout
    assert "0 mismatched" in run.stdout
    if not torch.cuda.is_available():
        assert "device cpu (CPU tensors (no CUDA))" in run.stderr


def test_same_seed_same_workload(summary: dict[str, Any]) -> None:
    run = kvoff("bench", *SMALL_RUN, "--json", "-")
    again = json.loads(run.stdout[run.stdout.index("{") :])
    assert (again["requests"], again["tokens_prompt"]) == (
        summary["requests"],
        summary["tokens_prompt"],
    )
    if torch.cuda.is_available():
        # On CUDA, when a load completes decides when a waiting request is admitted, so the
        # tier's history (not the workload) varies between runs.
        return
    for key in ("blocks_queried", "blocks_hit", "evictions", "allocation_failures"):
        assert again[key] == summary[key]


def test_exporter_shows_the_summary_totals(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "summary.json"
    proc = start_bench(out, port, linger=30)
    try:
        s = wait_for_summary(proc, out, timeout=120)
        m = scrape(port)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    labels = (("engine", "0"), ("model_name", "tiny"))

    def val(name: str, **extra: str) -> float:
        return m[(name, tuple(sorted((*labels, *extra.items()))))]

    for d in ("GPU_to_CPU", "CPU_to_GPU"):
        t = s["transfers"][d]
        assert val("kvoff_transfer_bytes_total", direction=d) == t["bytes"]
        assert val("kvoff_transfer_ops_total", direction=d) == t["ops"]
        assert val("kvoff_transfer_blocks_total", direction=d) == t["blocks"]
        assert val("kvoff_transfer_failed_ops_total", direction=d) == 0
        assert val("kvoff_transfer_seconds_total", direction=d) == pytest.approx(t["seconds"])
        assert val("kvoff_transfer_size_bytes_count", direction=d) == t["ops"]
        assert val("vllm:kv_offload_total_bytes_total", transfer_type=d) == t["bytes"]
    assert val("kvoff_lookup_blocks_total") == s["blocks_queried"]
    assert val("kvoff_lookup_hit_blocks_total") == s["blocks_hit"]
    assert val("kvoff_cpu_blocks_stored_total") == s["blocks_stored"]
    assert val("kvoff_cpu_blocks_evicted_total") == s["evictions"]
    assert val("kvoff_cpu_allocation_failures_total") == s["allocation_failures"]
    assert val("kvoff_cpu_capacity_blocks") == s["cpu_capacity_blocks"]
    assert val("kvoff_cpu_pinned_blocks") == 0  # the run drained every transfer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "gpt-17"], "unknown preset 'gpt-17'"),
        (["--cpu-gb", "-1"], "--cpu-gb must be positive, got -1"),
        (["--gpu-blocks", "0"], "--gpu-blocks must be positive, got 0"),
        (["--requests", "ten"], "--requests must be a number, got 'ten'"),
        (["--cpu-gb", "0.0000001"], "is smaller than one CPU block"),
        (["--cpu-block-size", "24"], "--cpu-block-size 24 is not a multiple of"),
        (["--metrics-port", "70000"], "--metrics-port must be in 1..65535"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(args: list[str], message: str) -> None:
    run = kvoff("bench", "--preset", "tiny", "--requests", "4", *args)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert message in lines[0]
    assert lines[0].startswith("kvoff")


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = kvoff("bench", "--preset", "tiny", "--requests", "4", "--metrics-port", str(port))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert str(port) in lines[0] and "Traceback" not in run.stderr


def test_progress_bar_draws_one_line_and_only_when_enabled() -> None:
    import io

    from kvoff.cli import _Progress

    shown = io.StringIO()
    bar = _Progress(10, "requests", shown, enabled=True)
    bar.update(5, "1,024 tokens from CPU")
    bar.update(6, "redrawn at most five times a second")  # too soon: not drawn
    bar.close()
    assert shown.getvalue() == (
        "\r[###############               ] 5/10 requests  1,024 tokens from CPU   \n"
    )
    hidden = io.StringIO()
    bar = _Progress(10, "requests", hidden, enabled=False)
    bar.update(5, "x")
    bar.close()
    assert hidden.getvalue() == ""
