"""The connection to the server: client construction, error kinds, and reconnection backoff.

One :class:`Link` per process and server, shared by the tier's background threads. Every
network operation goes through :meth:`Link.call`, which:

- refuses at once (:class:`Unavailable`) while the link is down and its backoff has not
  expired, so a dead server costs nothing per call;
- classifies a failure into one of :data:`~kvoff.remote.stats.ERROR_KINDS` and counts it;
- on a connection, timeout or authentication failure marks the link down for a backoff that
  doubles from ``backoff_initial`` to ``backoff_max`` (with jitter), drops the client (its
  sockets may be half-dead; a cluster client must re-learn the topology), and lets the next
  call after the backoff try again: that call is the reconnection probe.

Only redacted URLs and scrubbed messages reach the log or the counters.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    NoPermissionError,
    OutOfMemoryError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from kvoff.remote.config import RemoteConfig
from kvoff.remote.resp import KvoffConnection, KvoffSSLConnection
from kvoff.remote.stats import RemoteStats

__all__ = ["Link", "RemoteFailure", "Unavailable", "classify", "pipelined"]

log = logging.getLogger("kvoff.remote")
T = TypeVar("T")

# Kinds after which the server is presumed unreachable until a backoff has passed.
_GOES_DOWN = frozenset({"connection", "timeout", "auth"})


class Unavailable(Exception):
    """The link is down and its backoff has not expired; nothing was sent."""


class RemoteFailure(Exception):
    """A network operation failed; ``kind`` is what the counters recorded."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def classify(err: BaseException) -> str:
    """The error kind of an exception raised by redis-py or the socket layer."""
    if isinstance(
        err,
        AuthenticationError
        | AuthenticationWrongNumberOfArgsError
        | AuthorizationError
        | NoPermissionError,
    ):
        return "auth"
    if isinstance(err, RedisTimeoutError | socket.timeout):
        return "timeout"
    if isinstance(err, OutOfMemoryError):
        return "oom"
    if isinstance(err, RedisConnectionError | OSError | RedisClusterException):
        return "connection"
    return "server"


def make_client(config: RemoteConfig, max_connections: int) -> Any:
    """A redis-py client for ``config`` that never retries on its own (the link does)."""
    common: dict[str, Any] = {
        "username": config.username,
        "password": config.password,
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": 0,
        "client_name": "kvoff-remote",
        "socket_read_size": 1 << 20,
        "protocol": 2,
    }
    if config.tls:
        common.update(
            connection_class=KvoffSSLConnection,
            ssl_ca_certs=config.ssl_ca_certs,
            ssl_cert_reqs=config.ssl_cert_reqs,
            ssl_check_hostname=config.ssl_check_hostname,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
        )
    else:
        common["connection_class"] = KvoffConnection
    if config.cluster:
        # The seed URL carries no credentials: they travel as keywords, never in a string.
        return RedisCluster(
            url=f"redis://{config.host}:{config.port}",
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            **common,
        )
    pool = redis.ConnectionPool(
        host=config.host,
        port=config.port,
        db=config.db,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 0),
        **common,
    )
    return redis.Redis(connection_pool=pool)


class Link:
    """Shared client plus up/down state with exponential backoff (see the module doc)."""

    def __init__(
        self,
        config: RemoteConfig,
        stats: RemoteStats,
        *,
        max_connections: int = 8,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        self.config = config
        self.stats = stats
        self.max_connections = max_connections
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._client: Any = None
        self._up = False
        self._ever_up = False
        self._retry_at = 0.0
        self._backoff = backoff_initial
        self._last_error: str | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Link({self.config.redacted_url!r}, {self.state})"

    @property
    def up(self) -> bool:
        return self._up

    @property
    def state(self) -> str:
        """``"new"`` before the first operation, then ``"up"`` or ``"down"``."""
        if self._up:
            return "up"
        return "down" if self._last_error is not None else "new"

    @property
    def last_error(self) -> str | None:
        """The last failure's kind and (scrubbed) message, for logs and debugging."""
        return self._last_error

    def retry_in(self) -> float:
        """Seconds until a call may be tried (0 when it may be tried now)."""
        return max(0.0, self._retry_at - time.monotonic())

    def available(self) -> bool:
        return not self._closed and time.monotonic() >= self._retry_at

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)``; :class:`Unavailable` while backing off, :class:`RemoteFailure`
        (counted) when it fails."""
        if not self.available():
            raise Unavailable(self._last_error or "remote tier closed")
        try:
            client = self._get_client()
            result = fn(client)
        except Exception as err:
            # Anything else (a client closed under another thread, a library bug) is counted
            # as a server error rather than allowed to kill a background thread.
            kind = classify(err)
            if not isinstance(err, RedisError | OSError | RedisClusterException):
                log.warning("remote tier: unexpected %s", type(err).__name__, exc_info=True)
            self.failed(kind, err)
            raise RemoteFailure(kind, self.config.scrub(f"{kind}: {err}")) from None
        self._succeeded()
        return result

    def failed(self, kind: str, err: BaseException | str) -> None:
        """Count a failure of ``kind``; a connection-level kind takes the link down."""
        message = self.config.scrub(f"{kind}: {err}")
        self.stats.record_error(kind)
        if kind not in _GOES_DOWN:
            return
        with self._lock:
            self._last_error = message
            was_up = self._up
            self._up = False
            delay = self._backoff * random.uniform(0.5, 1.0)
            self._retry_at = time.monotonic() + delay
            self._backoff = min(self._backoff * 2, self.backoff_max)
            client, self._client = self._client, None
        self.stats.set_gauge("up", 0)
        if was_up:
            self.stats.add("link", "disconnects")
            log.warning("remote tier %s went down (%s)", self.config.redacted_url, message)
        else:
            log.debug("remote tier %s still down (%s)", self.config.redacted_url, message)
        _close_quietly(client)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        _close_quietly(client)

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.config, self.max_connections)
            return self._client

    def _succeeded(self) -> None:
        if self._up:
            return
        with self._lock:
            if self._up:
                return
            self._up = True
            self._backoff = self.backoff_initial
            came_back = self._ever_up or self._last_error is not None
            self._ever_up = True
        self.stats.set_gauge("up", 1)
        if came_back:
            self.stats.add("link", "reconnects")
            log.info("remote tier %s is up again", self.config.redacted_url)


def pipelined(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` in one non-transactional pipeline; per-command server errors come back
    as exception objects in the list, a connection-level one raises."""
    pipe = client.pipeline(transaction=False)
    for cmd in commands:
        pipe.execute_command(*cmd)
    results: list[Any] = pipe.execute(raise_on_error=False)
    # A connection-level failure inside the pipeline fails the whole call (the link counts it).
    for r in results:
        if isinstance(r, Exception) and classify(r) in ("connection", "timeout", "auth"):
            raise r
    return results


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    try:
        client.close()
    except Exception:
        log.debug("closing a remote client failed", exc_info=True)
