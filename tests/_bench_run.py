"""Run ``kvoff bench`` as a user would, in a subprocess, and read what it serves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# A tiny model, a CPU tier of 65 blocks and 160 requests: hits, evictions and allocation
# failures all happen within a couple of seconds on two cores.
SMALL_RUN = [
    "--preset", "tiny", "--requests", "160", "--cpu-gb", "0.001", "--gpu-blocks", "512",
    "--seed", "7", "--no-progress",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kvoff(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvoff", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def start_bench(json_path: Path, port: int, linger: float, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kvoff", "bench", *SMALL_RUN, "--json", str(json_path),
         "--metrics-port", str(port), "--linger", str(linger), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_for_summary(proc: subprocess.Popen[str], json_path: Path, timeout: float) -> Any:
    """The summary JSON, once the bench has written it (it then serves /metrics for a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None and not json_path.exists():
            _out, err = proc.communicate()
            raise AssertionError(f"kvoff bench exited {proc.returncode}: {err}")
        if json_path.exists():
            text = json_path.read_text()
            if text.endswith("\n"):
                return json.loads(text)
        time.sleep(0.05)
    raise AssertionError("kvoff bench wrote no summary in time")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples
