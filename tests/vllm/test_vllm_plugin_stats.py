"""The ``vllm.general_plugins`` entry point as pyproject.toml declares it, found by vLLM's own
plugin loader; and kvoff's statistics through vLLM's connector-stats pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from _engine import CHUNK_BYTES, Engine
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from vllm.plugins import load_plugins_by_group
from vllm.v1.kv_offload.factory import OffloadingSpecFactory

import kvoff
from kvoff.vllm.connector import KvoffConnector
from kvoff.vllm.spec import KvoffOffloadingSpec
from kvoff.vllm.stats import KvoffConnectorStats, KvoffPromMetrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]


def test_entry_point_from_pyproject_registers_both_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["vllm.general_plugins"]
    assert declared == {"kvoff": "kvoff.vllm.plugin:register"}
    # An installed kvoff carries this entry point in its dist-info; make one from pyproject.
    dist = tmp_path / "kvoff_ep-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvoff-ep\nVersion: 0.0\n")
    lines = [f"{k} = {v}" for k, v in declared.items()]
    (dist / "entry_points.txt").write_text("[vllm.general_plugins]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins_by_group("vllm.general_plugins")
    assert "kvoff" in plugins
    plugins["kvoff"]()
    plugins["kvoff"]()  # vLLM may run a plugin more than once per process
    assert OffloadingSpecFactory.get_spec_cls({"spec_name": "KvoffOffloadingSpec"}) is (
        KvoffOffloadingSpec
    )


def test_stats_aggregate_and_reduce_carry_kvoff_snapshots() -> None:
    acc = kvoff.StatsAccumulator()
    acc.record_transfer("GPU_to_CPU", 4096, 0.001, num_blocks=1)
    worker1 = KvoffConnectorStats()
    worker1.add_kvoff(acc.take())
    acc.record_transfer("GPU_to_CPU", 8192, 0.002, num_blocks=2)
    worker2 = KvoffConnectorStats()
    worker2.add_kvoff(acc.take())
    worker1.aggregate(worker2)
    # Through the data dict, as vLLM's front end rebuilds it.
    rebuilt = KvoffConnector.build_kv_connector_stats(worker1.data)
    assert isinstance(rebuilt, KvoffConnectorStats)
    reduced = rebuilt.reduce()
    assert reduced["kvoff_GPU_to_CPU_total_bytes"] == 4096 + 8192
    assert reduced["kvoff_GPU_to_CPU_ops"] == 2
    assert reduced["kvoff_GPU_to_CPU_blocks"] == 3
    assert not rebuilt.is_empty()
    assert KvoffConnectorStats().is_empty()


def test_kvoff_connector_stats_reach_prometheus_with_vllm_labels(model_dir: Path) -> None:
    eng = Engine(model_dir, {"cpu_bytes_to_use": 8 * CHUNK_BYTES}, kv_connector="KvoffConnector")
    p = [(i * 7) % 900 + 50 for i in range(40)]
    eng.add("a", p)
    eng.run()
    assert eng.scheduler.reset_prefix_cache()
    eng.add("b", p)
    eng.run()
    total = KvoffConnectorStats()
    for s in eng.kv_stats:
        total.aggregate(KvoffConnector.build_kv_connector_stats(s))
    snap = total.kvoff
    assert snap is not None
    d = snap.to_dict()
    assert d["transfers"]["GPU_to_CPU"]["blocks"] == 2  # a's two full blocks
    assert d["transfers"]["CPU_to_GPU"]["blocks"] == 2  # loaded back for b
    assert d["manager"]["blocks_stored"] == 2
    # Gauges are per snapshot (kvoff's aggregate sums them, as for workers of one interval).
    last = KvoffConnector.build_kv_connector_stats(eng.kv_stats[-1]).kvoff
    assert last is not None
    assert last.to_dict()["manager"]["capacity_blocks"] == 8

    registry = CollectorRegistry()
    prom = KvoffPromMetrics(
        eng.vllm_config,
        {Gauge: Gauge, Counter: Counter, Histogram: Histogram},
        ["model_name", "engine"],
        {0: ["m", "0"]},
        registry=registry,
    )
    # vLLM's own families are created in prometheus_client's global registry by vLLM's code;
    # kvoff's live in the registry given here.
    for s in eng.kv_stats:
        prom.observe(s, engine_idx=0)
    labels = {"model_name": "m", "engine": "0", "direction": "GPU_to_CPU"}
    assert registry.get_sample_value("kvoff_transfer_blocks_total", labels) == 2
    assert (
        registry.get_sample_value(
            "kvoff_transfer_blocks_total", {**labels, "direction": "CPU_to_GPU"}
        )
        == 2
    )


def test_registering_over_another_class_is_refused_and_changes_nothing() -> None:
    from kvoff.errors import InvalidStateError
    from kvoff.vllm.plugin import _register_once

    registry: dict[str, type] = {"KvoffConnector": dict}

    def register(name: str, module: str, cls: str) -> None:
        if name in registry:
            raise ValueError(f"{name} is already registered")
        registry[name] = KvoffConnector

    with pytest.raises(InvalidStateError, match="already has 'KvoffConnector' registered as"):
        _register_once(register, registry.__getitem__, "KvoffConnector", "kvoff.vllm")
    assert registry == {"KvoffConnector": dict}
    # Ours already there: harmless.
    registry["KvoffConnector"] = KvoffConnector
    _register_once(register, registry.__getitem__, "KvoffConnector", "kvoff.vllm")
    assert registry == {"KvoffConnector": KvoffConnector}
