"""The README's embedding example runs as written, and its two set-up commands are the ones
.ci/run uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_embedding_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    line = capsys.readouterr().out
    assert line.startswith("KV offload: GPU_to_CPU ")
    assert "hits 2/4 blocks" in line


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert len(commands) == 2
    bench, tests = commands
    assert bench.endswith("kvoff bench")
    assert tests.endswith("pytest")
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
