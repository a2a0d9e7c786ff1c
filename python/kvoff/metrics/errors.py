"""Errors raised by ``kvoff.metrics``, inside the kvoff hierarchy.

Both carry the offending name or port as attributes, so callers can react without parsing the
message.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from kvoff.errors import InvalidStateError, KvoffError

__all__ = ["DuplicateMetricError", "PortInUseError"]


class DuplicateMetricError(InvalidStateError):
    """The registry already holds a metric this exporter would expose (another exporter with
    the same namespace, or a second ``vllm_compatible`` exporter, or vLLM's own offload
    metrics). ``metrics`` lists the clashing metric names, sorted."""

    def __init__(self, metrics: Iterable[str]) -> None:
        self.metrics: tuple[str, ...] = tuple(sorted(metrics))
        names = ", ".join(self.metrics)
        what = f"metric {names} is" if len(self.metrics) == 1 else f"metrics {names} are"
        super().__init__(
            f"{what} already registered in this registry; one OffloadPromMetrics "
            f"serves every engine (observe(stats, engine=...)), or give the second exporter "
            f"another namespace (and vllm_compatible=False) or another registry"
        )


class PortInUseError(KvoffError, OSError):
    """The metrics server could not bind its address because another socket holds it."""

    def __init__(self, addr: str, port: int) -> None:
        self.addr = addr
        self.port = port
        # (errno, strerror) so that `err.errno == errno.EADDRINUSE` holds as for the bind error.
        super().__init__(
            errno.EADDRINUSE,
            f"cannot serve metrics on {addr}:{port}: port {port} is already in use",
        )
