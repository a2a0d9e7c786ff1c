"""The hand-written stubs match the extension module (mypy.stubtest), and the public package
re-exports exactly what its ``__all__`` names."""

from __future__ import annotations

import subprocess
import sys

import kvoff
import kvoff._core


def test_stubtest_passes() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "kvoff._core"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_public_names_resolve() -> None:
    assert sorted(kvoff.__all__) == kvoff.__all__
    for name in kvoff.__all__:
        assert getattr(kvoff, name) is not None
    for name in kvoff._core.__all__:
        assert name in kvoff.__all__
