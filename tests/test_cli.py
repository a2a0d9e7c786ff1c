"""``kvoff bench`` end to end: the summary's numbers against each other and against what its
Prometheus exporter serves (as a subprocess), and every bad option refused as one line before
the run (in-process, through ``kvoff.cli``)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from _bench_run import SMALL_RUN, free_port, kvoff, scrape, start_bench, wait_for_summary
from kvoff._sysmem import format_gib, physical_memory_bytes
from kvoff.cli import build_parser, main
from kvoff.cli_options import check_json_path

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
    assert "start-up             tier pinned in the background: first step " in run.stdout
    if not torch.cuda.is_available():
        assert "device cpu (CPU tensors (no CUDA))" in run.stderr


def test_each_direction_is_measured_against_the_same_runs_yardstick(
    summary: dict[str, Any],
) -> None:
    # CPU tensors: a plain copy_ of each transfer's bytes; CUDA: one large pinned copy.
    assert summary["baseline"] == ("link" if torch.cuda.is_available() else "copy_")
    for d in summary["transfers"].values():
        assert d["link_gb_per_s"] > 0
        assert d["fraction_of_link"] == pytest.approx(d["gb_per_s"] / d["link_gb_per_s"])


def test_the_tier_grows_while_the_engine_serves(summary: dict[str, Any]) -> None:
    st = summary["startup"]
    assert st["tier_in_background"] is True
    # Served from the first step; the tier (one chunk) was whole before the run ended, and
    # the usable limit grew to all of it.
    assert 0 < st["first_step_seconds"] <= st["first_store_seconds"]
    assert st["first_step_seconds"] <= st["tier_ready_seconds"]
    assert st["usable_blocks_at_end"] == summary["cpu_capacity_blocks"]
    assert list(st["alloc_seconds_by_rank"]) == ["0"] and st["pinning_gib_per_s"] > 0


def test_same_seed_same_workload(summary: dict[str, Any]) -> None:
    # The whole tier up front: when a background chunk lands would decide which early
    # stores find room, and this compares the tier's history.
    first = kvoff("bench", *SMALL_RUN, "--tier-upfront", "--json", "-")
    summary = json.loads(first.stdout[first.stdout.index("{") :])
    assert summary["startup"]["tier_in_background"] is False
    run = kvoff("bench", *SMALL_RUN, "--tier-upfront", "--json", "-")
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


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``kvoff.cli.main`` in-process: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's error(): exit status 2
        assert isinstance(e.code, int)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def parse_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line with which the parser refuses ``args`` (exit status 2). Only the
    parser runs: a value it wrongly lets through fails here and never reaches a run."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["bench", *args])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "gpt-17"], "unknown preset 'gpt-17'; choose one of tiny, small, llama-3-8b"),
        (["--cpu-gb", "-1"], "--cpu-gb must be positive, got -1"),
        (["--cpu-gb", "0"], "--cpu-gb must be positive, got 0"),
        (["--cpu-gb", "nan"], "--cpu-gb must be a finite number, got nan"),
        (["--cpu-gb", "inf"], "--cpu-gb must be a finite number, got inf"),
        (["--cpu-gb", "1e400"], "--cpu-gb must be a finite number, got 1e400"),
        (["--cpu-gb", "lots"], "--cpu-gb must be a number, got 'lots'"),
        (["--gpu-blocks", "0"], "--gpu-blocks must be positive, got 0"),
        (["--gpu-blocks", "1.5"], "--gpu-blocks must be an integer, got '1.5'"),
        (["--gpu-block-size", "-16"], "--gpu-block-size must be positive, got -16"),
        (["--cpu-block-size", "0"], "--cpu-block-size must be positive, got 0"),
        (["--requests", "ten"], "--requests must be an integer, got 'ten'"),
        (["--requests", "0"], "--requests must be positive, got 0"),
        (["--duration", "nan"], "--duration must be a finite number, got nan"),
        (["--duration", "inf"], "--duration must be a finite number, got inf"),
        (["--duration=-inf"], "--duration must be a finite number, got -inf"),
        (["--duration", "0"], "--duration must be positive, got 0"),
        (["--duration", "1e9"], "--duration must be at most 604800, got 1e9"),
        (["--conversations", "0"], "--conversations must be in 1..10000, got 0"),
        (["--conversations", "1000000000"], "--conversations must be in 1..10000, got 1000000000"),
        (["--seed", "-1"], "--seed must be in 0..18446744073709551615, got -1"),
        (["--seed", str(2**64)], "--seed must be in 0..18446744073709551615, got 1844674407"),
        (
            ["--seed", "x" * 100],
            "--seed must be an integer, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'",
        ),
        (["--metrics-port", "70000"], "--metrics-port must be in 1..65535, got 70000"),
        (["--metrics-port", "0"], "--metrics-port must be in 1..65535, got 0"),
        (["--metrics-addr", ""], "--metrics-addr must be a host name or address, got ''"),
        (["--linger", "-1"], "--linger must not be negative, got -1"),
        (["--linger", "nan"], "--linger must be a finite number, got nan"),
        (["--linger", "inf"], "--linger must be a finite number, got inf"),
        (["--linger", "1e300"], "--linger must be at most 604800, got 1e300"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--policy", "fifo"], "invalid choice: 'fifo'"),
        (["--requests", "4", "--duration", "1"], "not allowed with argument"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = parse_error(args, capsys)
    assert line.startswith("kvoff bench: error: argument ")
    assert message in line


def test_good_option_values_pass_the_parser() -> None:
    args = build_parser().parse_args(
        ["bench", "--cpu-gb", "0.5", "--duration", "604800", "--linger", "0",
         "--conversations", "10000", "--seed", str(2**64 - 1), "--metrics-port", "65535"]
    )  # fmt: skip
    assert (args.cpu_gb, args.duration, args.linger) == (0.5, 604800.0, 0.0)
    assert (args.conversations, args.seed, args.metrics_port) == (10000, 2**64 - 1, 65535)


def test_nan_duration_ends_at_once_as_a_command() -> None:
    # End to end: the bug was a bench that never ended; the timeout turns a regression into a
    # failure rather than a hang.
    run = kvoff("bench", "--preset", "tiny", "--duration", "nan", timeout=60)
    assert run.returncode == 2
    assert run.stderr == (
        "kvoff bench: error: argument --duration: --duration must be a finite number, got nan\n"
    )


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``kvoff bench`` in-process on arguments it must refuse before the run."""
    code, out, err = run_main(["bench", "--preset", "tiny", "--requests", "4", *argv], capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kvoff bench: error: ")
    return lines[0].removeprefix("kvoff bench: error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cpu-gb", "0.0000001"],
            "--cpu-gb 1e-07 is smaller than one CPU block (16384 bytes for preset tiny)",
        ),
        (["--cpu-block-size", "24"], "--cpu-block-size 24 is not a multiple of --gpu-block-size"),
    ],
)
def test_inconsistent_options_give_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in one_error_line(args, capsys)


def machine_memory() -> str:
    mem = physical_memory_bytes()
    if mem is None:
        pytest.skip("the OS does not report its physical memory")
    return format_gib(mem)


@pytest.mark.parametrize("cpu_gb", ["1e6", "1e308"])
def test_a_tier_larger_than_the_machine_is_refused_with_the_sizes(
    cpu_gb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = f"{float(cpu_gb):g}"
    assert one_error_line(["--cpu-gb", cpu_gb], capsys) == (
        f"--cpu-gb {shown}: a CPU tier of {shown} GiB does not fit this machine's "
        f"{machine_memory()} of physical memory"
    )


def test_kv_tensors_in_host_memory_count_against_the_machine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 10**9 GPU blocks of 16 tiny tokens (256 bytes each) = 3814.70 GiB, beside a 1 GiB tier.
    line = one_error_line(["--device", "cpu", "--gpu-blocks", str(10**9)], capsys)
    assert line == (
        f"--gpu-blocks 1000000000 of --gpu-block-size 16 tokens: the KV tensors, in host "
        f"memory here (3814.70 GiB), and the CPU tier (1.00 GiB) need 3815.70 GiB, more than "
        f"this machine's {machine_memory()} of physical memory"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kv_tensors_larger_than_the_gpu_are_refused_with_the_sizes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gpu = torch.cuda.get_device_properties(torch.device("cuda")).total_memory
    line = one_error_line(["--device", "cuda", "--gpu-blocks", str(10**9)], capsys)
    assert line == (
        f"--gpu-blocks 1000000000 of --gpu-block-size 16 tokens: the KV tensors need "
        f"3814.70 GiB, more than the GPU's {format_gib(gpu)}"
    )


def test_json_path_in_a_missing_directory_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing" / "x.json"
    assert one_error_line(["--json", str(path)], capsys) == (
        f"--json {path}: directory {path.parent} does not exist"
    )
    assert not path.parent.exists()


def test_json_path_that_is_a_directory_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert one_error_line(["--json", str(tmp_path)], capsys) == (
        f"--json {tmp_path} is a directory, not a file"
    )
    assert list(tmp_path.iterdir()) == []


def test_json_path_under_a_file_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_text("keep")
    path = tmp_path / "f" / "x.json"
    assert one_error_line(["--json", str(path)], capsys) == (
        f"--json {path}: directory {tmp_path / 'f'} is not a directory"
    )
    assert (tmp_path / "f").read_text() == "keep"


def test_json_path_the_os_refuses_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ("x" * 300)  # over NAME_MAX (255): open() would fail after the run
    line = one_error_line(["--json", str(path)], capsys)
    assert line == f"--json {str(path)[:37]}...: cannot write it (File name too long)"
    assert list(tmp_path.iterdir()) == []


def test_json_path_with_a_nul_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error_line(["--json", "out\x00.json"], capsys) == (
        "--json 'out\\x00.json': a path cannot contain a NUL character"
    )


def test_the_json_check_leaves_no_file_behind(tmp_path: Path) -> None:
    # The check creates the file to ask the OS, and removes it: nothing is left until the run
    # has a summary to write.
    path = tmp_path / "x.json"
    check_json_path(str(path))
    assert list(tmp_path.iterdir()) == []
    path.write_text("old")
    check_json_path(str(path))  # an existing file is checked, not touched
    assert path.read_text() == "old"


def test_linger_without_a_metrics_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error_line(["--linger", "5"], capsys) == (
        "--linger keeps serving /metrics after the run: it needs --metrics-port"
    )


def test_empty_json_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error_line(["--json", ""], capsys) == "--json needs a path ('-' for stdout), got ''"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_json_path_in_a_read_only_directory_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = one_error_line(["--json", str(locked / "x.json")], capsys)
    finally:
        locked.chmod(0o700)
    assert line == f"--json {locked / 'x.json'}: directory {locked} is not writable"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_failed_json_write_keeps_the_summary_and_is_one_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # /dev/full passes every check before the run (it exists and is writable) and then fails
    # the write with ENOSPC, as a full disk would.
    code, out, err = run_main(
        ["bench", *SMALL_RUN[:2], "--requests", "8", "--cpu-gb", "0.001", "--no-progress",
         "--json", "/dev/full"],
        capsys,
    )  # fmt: skip
    assert code == 1
    table, _, text = out.partition("{")
    assert "block hit rate" in table and "0 mismatched" in table
    summary = json.loads("{" + text)
    assert summary["requests"] == 8 and summary["verify_failures"] == 0
    assert err.splitlines()[-1] == (
        "kvoff bench: error: --json /dev/full: cannot write the summary (No space left on "
        "device); it is on stdout instead"
    )
    assert "Traceback" not in err


def test_unresolvable_metrics_address_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    line = one_error_line(
        ["--metrics-addr", "no.such.invalid", "--metrics-port", str(port)], capsys
    )
    assert line.startswith(
        f"--metrics-addr no.such.invalid: cannot serve metrics on no.such.invalid:{port}: "
        f"address 'no.such.invalid' does not resolve ("
    )


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = kvoff("bench", "--preset", "tiny", "--requests", "4", "--metrics-port", str(port))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0] == (
        f"kvoff bench: error: --metrics-port {port}: cannot serve metrics on 127.0.0.1:{port}: "
        f"port {port} is already in use"
    )


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


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "redis://user:pw-Secret1@cache:x/0",
            "--remote: remote URL 'redis://user:***@cache:x/0': the port is not a number",
        ),
        (
            "http://:pw-Secret1@cache:6379",
            "--remote: remote URL 'http://:***@cache:6379': scheme must be one of ['redis', "
            "'redis+cluster', 'rediss', 'rediss+cluster'], got 'http'",
        ),
        (
            "redis+cluster://:pw-Secret1@cache:7000/3",
            "--remote: remote URL 'redis+cluster://:***@cache:7000/3': a cluster has only "
            "database 0, got /3",
        ),
        (
            "redis://:pw-Secret1@cache/0?colour=blue",
            "--remote: remote URL 'redis://:***@cache/0': unknown parameter 'colour'",
        ),
        ("redis://:pw-Secret1@[::1", "--remote: not a URL of the form redis://host:port/db"),
    ],
)
def test_a_bad_remote_url_is_one_line_naming_the_option_without_the_password(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("redis", reason="--remote needs the remote extra")
    assert one_error_line(["--remote", url], capsys) == message
