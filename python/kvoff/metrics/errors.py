"""Errors raised by ``kvoff.metrics``, inside the kvoff hierarchy.

Each carries the offending name, engine, address or port as attributes, so callers can react
without parsing the message.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from kvoff.errors import InvalidStateError, KvoffError

__all__ = [
    "AddressUnavailableError",
    "DuplicateMetricError",
    "MetricsServerError",
    "PortInUseError",
    "UnknownEngineError",
]


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


class UnknownEngineError(KvoffError, KeyError):
    """``remove_engine`` of an engine the exporter has no series for."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        super().__init__(f"engine {engine!r} has no series in this exporter")

    def __str__(self) -> str:
        # KeyError's __str__ quotes its argument as a repr; keep the message readable.
        return str(self.args[0])


class MetricsServerError(KvoffError, OSError):
    """The metrics server could not bind ``addr:port``. ``errno`` is the OS's (getaddrinfo's
    for an address that does not resolve), so code written against the bare ``OSError`` still
    works."""

    def __init__(self, addr: str, port: int, code: int, reason: str) -> None:
        self.addr = addr
        self.port = port
        # (errno, strerror) so that `err.errno` reads as on the error it replaces.
        super().__init__(code, f"cannot serve metrics on {addr}:{port}: {reason}")


class PortInUseError(MetricsServerError):
    """The metrics server could not bind its address because another socket holds it."""

    def __init__(self, addr: str, port: int) -> None:
        super().__init__(addr, port, errno.EADDRINUSE, f"port {port} is already in use")


class AddressUnavailableError(MetricsServerError):
    """The address does not resolve, or is not one of this machine's."""
