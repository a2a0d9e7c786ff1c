"""kvoff inside vLLM (tested with vLLM 0.33.0): the only kvoff module that imports vLLM.

- ``KvoffOffloadingSpec``: ``"spec_name": "KvoffOffloadingSpec"`` in
  ``kv_connector_extra_config`` of vLLM's ``OffloadingConnector``;
- ``KvoffConnector``: ``"kv_connector": "KvoffConnector"``, the same plus kvoff's statistics;
- ``register``: the ``vllm.general_plugins`` entry point that registers both names.

Attributes load on first use, so vLLM's plugin loader (which imports ``kvoff.vllm.plugin``)
pulls in none of vLLM's connector machinery early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvoff._lazy import lazy_names

if TYPE_CHECKING:
    from kvoff.vllm.connector import KvoffConnector
    from kvoff.vllm.manager import KvoffOffloadingManager
    from kvoff.vllm.plugin import register
    from kvoff.vllm.spec import KvoffOffloadingSpec
    from kvoff.vllm.stats import KvoffConnectorStats, KvoffPromMetrics
    from kvoff.vllm.worker import KvoffOffloadingWorker

__all__ = [
    "KvoffConnector",
    "KvoffConnectorStats",
    "KvoffOffloadingManager",
    "KvoffOffloadingSpec",
    "KvoffOffloadingWorker",
    "KvoffPromMetrics",
    "register",
]

_WHERE = {
    "KvoffConnector": "connector",
    "KvoffConnectorStats": "stats",
    "KvoffOffloadingManager": "manager",
    "KvoffOffloadingSpec": "spec",
    "KvoffOffloadingWorker": "worker",
    "KvoffPromMetrics": "stats",
    "register": "plugin",
}


__getattr__, __dir__ = lazy_names(
    "kvoff.vllm", globals(), {name: f"kvoff.vllm.{module}" for name, module in _WHERE.items()}
)
