"""redis-py connections that receive large bulk replies straight into one buffer.

redis-py's pure-Python reply reader (used when the optional ``hiredis`` parser is absent)
collects a bulk string in ~32 KiB ``recv`` calls appended to a ``BytesIO``, then copies it out
two more times; on a 4 MiB GET that costs about five times what the socket does (measured in
docs/REMOTE.md). This module plugs a reader into redis-py's ``parser_class`` hook that keeps
everything as redis-py does except one thing: a bulk string of at least
:data:`DIRECT_READ_MIN` bytes is received with ``recv_into`` into a ``bytearray`` of its exact
size (what was already buffered is copied first). Replies come back as that ``bytearray``.

It subclasses redis-py's RESP2 parser and socket buffer, whose internals are not a public API;
``tests/remote/test_remote_resp.py`` checks exact bytes across sizes and buffer boundaries
against a real server, and the extra's version range pins what was tested.
"""

from __future__ import annotations

import threading
from typing import Any

from redis.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig
from redis.utils import SENTINEL

try:  # redis-py >= 5 keeps its parsers here
    from redis._parsers import _RESP2Parser
    from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR, SocketBuffer
except ImportError as err:  # pragma: no cover - only with an untested redis-py
    raise ImportError(
        f"kvoff.remote needs redis-py 5 to 8 (its parser modules moved): {err}"
    ) from err

__all__ = ["BUFFERS", "DIRECT_READ_MIN", "BufferPool", "KvoffConnection", "KvoffSSLConnection"]

#: Bulk strings at least this long skip the BytesIO path.
DIRECT_READ_MIN = 64 * 1024
_UNSET: Any = SENTINEL


class BufferPool:
    """Reusable ``bytearray``s by exact size, for values of a few MB.

    A fresh multi-MB ``bytearray`` costs a zero fill plus a page fault per 4 KiB on first
    touch, which on this project's dev VM was slower than the loopback socket itself; blocks
    all have one size, so the tier hands buffers back here (:meth:`give`) once a value has been
    checked and copied out or sent, and the next reply or value reuses one.
    """

    def __init__(self, max_per_size: int = 32) -> None:
        self.max_per_size = max_per_size
        self._free: dict[int, list[bytearray]] = {}
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bytearray:
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                return free.pop()
        return bytearray(nbytes)

    def give(self, buf: object) -> None:
        """Return a buffer nobody reads any more (anything else is ignored)."""
        if type(buf) is not bytearray or len(buf) < DIRECT_READ_MIN:
            return
        with self._lock:
            free = self._free.setdefault(len(buf), [])
            if len(free) < self.max_per_size:
                free.append(buf)


#: The pool the direct reader takes reply buffers from and the tier gives them back to.
BUFFERS = BufferPool()


class _DirectBuffer(SocketBuffer):
    def read(self, length: int, timeout: Any = _UNSET) -> Any:
        if length < DIRECT_READ_MIN:
            return super().read(length, timeout)
        out = BUFFERS.take(length)
        view = memoryview(out)
        got = self._buffer.readinto(view)
        if got < length:
            self._recv_into(view[got:], timeout)
        # The CRLF that ends the bulk string.
        super().read(0, timeout)
        return out

    def _recv_into(self, view: memoryview, timeout: Any) -> None:
        sock = self._sock
        custom = timeout is not _UNSET
        if custom:
            sock.settimeout(timeout)
        try:
            while view.nbytes:
                n = sock.recv_into(view)
                if n == 0:
                    raise RedisConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
                view = view[n:]
        except TimeoutError:
            raise RedisTimeoutError("Timeout reading from socket") from None
        except OSError as err:
            raise RedisConnectionError(f"Error while reading from socket: {err.args}") from None
        finally:
            if custom:
                sock.settimeout(self.socket_timeout)


class _DirectParser(_RESP2Parser):
    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)  # type: ignore[no-untyped-call]
        self._buffer = _DirectBuffer(
            connection._sock, self.socket_read_size, connection.socket_timeout
        )


def _direct(kwargs: dict[str, Any]) -> None:
    kwargs["parser_class"] = _DirectParser
    kwargs["protocol"] = 2
    # Maintenance push notifications need RESP3; this tier speaks RESP2.
    kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)


class KvoffConnection(Connection):
    """A plain TCP connection with the direct bulk reader."""

    def __init__(self, **kwargs: Any) -> None:
        _direct(kwargs)
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]


class KvoffSSLConnection(SSLConnection):
    """A TLS connection with the direct bulk reader (``recv_into`` works on SSL sockets)."""

    def __init__(self, **kwargs: Any) -> None:
        _direct(kwargs)
        super().__init__(**kwargs)
