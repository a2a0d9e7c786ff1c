"""The scheduler half must not pay for the worker half's imports (torch, triton) or the
exporter's (prometheus-client): each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "triton", "prometheus_client")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.split()


@pytest.mark.parametrize(
    "code",
    [
        "import kvoff",
        "from kvoff import OffloadingManager, StatsAccumulator, OffloadingConnectorStats",
        "from kvoff import KvoffError, InvalidArgumentError, JobTracker",
        "import kvoff.connector",
        "from kvoff.connector import OffloadingScheduler, RequestStep, StepMetadata, "
        "WorkerOutput, TransferSpec",
        "from kvoff.remote import RemoteTier, RemoteLayout",
    ],
)
def test_scheduler_names_load_without_torch(code: str) -> None:
    assert _loaded_after(code) == []


def test_worker_and_metrics_names_load_on_first_use() -> None:
    assert _loaded_after("import kvoff; kvoff.CpuGpuTransfer") == ["torch", "triton"]
    assert _loaded_after("import kvoff; kvoff.format_stats") == ["prometheus_client"]
    assert _loaded_after("import kvoff.connector as c; c.OffloadingWorker") == ["torch", "triton"]
    assert _loaded_after("from kvoff.connector import OffloadingWorker") == ["torch", "triton"]


def test_lazy_names_are_listed_and_unknown_names_fail() -> None:
    import kvoff

    assert set(kvoff.__all__) <= set(dir(kvoff))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = kvoff.nope  # type: ignore[attr-defined]
    import kvoff.connector

    assert set(kvoff.connector.__all__) <= set(dir(kvoff.connector))
    with pytest.raises(AttributeError, match=r"'kvoff\.connector' has no attribute 'nope'"):
        _ = kvoff.connector.nope  # type: ignore[attr-defined]
