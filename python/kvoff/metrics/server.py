"""Serving ``/metrics`` over HTTP from a background thread.

prometheus_client's ``start_http_server`` returns the WSGI server and its daemon thread since
0.20 (client_python PR #999), the oldest version kvoff supports. :class:`MetricsServer` keeps
both so that the server can be shut down and its port reused, which a long-lived engine (and a
test suite) needs; ``shutdown()`` alone leaves the socket bound (client_python issue #1068),
hence the ``server_close()``.
"""

from __future__ import annotations

import errno
import socket
import threading
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from kvoff.errors import InvalidArgumentError
from kvoff.metrics.errors import AddressUnavailableError, MetricsServerError, PortInUseError

__all__ = ["MetricsServer", "start_metrics_server"]


class MetricsServer:
    """A running metrics endpoint. ``port`` is the bound port (the chosen one when started
    with port 0); ``url`` is where Prometheus should scrape. Use as a context manager or call
    :meth:`shutdown`."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, addr: str) -> None:
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self._closed = False
        self.addr = addr
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop serving, close the socket and join the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<MetricsServer {self.url} {state}>"


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (the global ``prometheus_client.REGISTRY`` when None) at
    ``http://addr:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it from the result's ``port``). The default address is
    loopback only; pass ``"0.0.0.0"`` to let a remote Prometheus scrape. Raises
    :class:`~kvoff.metrics.PortInUseError` naming the port when it is taken,
    :class:`~kvoff.metrics.AddressUnavailableError` naming the address when it does not
    resolve or is not this machine's, and :class:`~kvoff.metrics.MetricsServerError` (their
    base, an ``OSError``) naming both for any other refusal of the bind.
    """
    if type(port) is not int or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int in 0..65535, got {port!r}")
    if not isinstance(addr, str) or not addr:
        raise InvalidArgumentError(f"addr must be a non-empty str, got {addr!r}")
    if not addr.isprintable() or addr.strip() != addr:
        raise InvalidArgumentError(f"addr must be a host name or IP address, got {addr[:64]!r}")
    try:
        server, thread = start_http_server(
            port, addr=addr, registry=REGISTRY if registry is None else registry
        )
    except OSError as exc:
        raise _bind_error(exc, addr, port) from exc
    except UnicodeError as exc:
        # getaddrinfo encodes a host name with IDNA first: a label over 63 characters, or
        # text no host name can hold, fails there.
        raise InvalidArgumentError(
            f"addr {addr[:64]!r} is not a valid host name or IP address ({exc})"
        ) from exc
    return MetricsServer(server, thread, addr)


def _bind_error(exc: OSError, addr: str, port: int) -> OSError:
    """The kvoff error for a failed bind, naming the address and port."""
    if exc.errno is None:
        return exc  # not from the OS: nothing more precise to say
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(addr, port)
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return AddressUnavailableError(
            addr, port, exc.errno, f"address {addr!r} does not resolve ({reason})"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return AddressUnavailableError(
            addr, port, exc.errno, f"{addr} is not an address of this machine ({reason})"
        )
    return MetricsServerError(addr, port, exc.errno, reason)
