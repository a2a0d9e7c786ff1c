"""``kvoff --help`` must not pay for torch or the worker half: the parser is built, and the
help printed, in a fresh interpreter without either being imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "triton", "prometheus_client", "kvoff.transfer", "kvoff.bench.engine")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.split()


def test_parser_is_built_without_torch() -> None:
    code = "import kvoff.cli\nkvoff.cli.build_parser().parse_args(['bench', '--tp', '2'])"
    assert _loaded_after(code) == []


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"]])
def test_help_imports_no_torch(argv: list[str]) -> None:
    code = (
        "import contextlib, io, kvoff.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    kvoff.cli.main({argv!r})"
    )
    assert _loaded_after(code) == []
