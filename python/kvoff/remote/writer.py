"""Write-behind: blocks queued by the step thread, written by background threads.

:meth:`WriteBehind.enqueue` never touches the network and never waits for it: it validates,
then either copies the block straight into the value buffer it will send (``copy=True``, one
memcpy, after which the caller may reuse its memory) or keeps the caller's buffer
(``copy=False``: the caller promises not to change it until its ``token`` comes back from
:meth:`WriteBehind.take_released`). The queue is bounded in blocks and bytes; a block that does
not fit pushes out the *oldest* pending ones, each counted in ``write_behind.dropped``.

Writer threads take batches oldest-first, ask which keys the server already holds (one
pipelined EXISTS round trip, so a block another instance already wrote is not sent again),
and SET the rest in one pipeline. A failed batch is counted and dropped, not retried: the
block is still in the CPU tier, and the remote tier is a cache. While the link is down the
threads leave the queue alone until the backoff expires.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

from kvoff.errors import InvalidArgumentError
from kvoff.remote.buffers import as_readable
from kvoff.remote.codec import HEADER_BYTES, build_value, encode_header
from kvoff.remote.keys import BlockHash, Keyspace
from kvoff.remote.link import Link, RemoteFailure, Unavailable, classify, log, pipelined
from kvoff.remote.resp import BUFFERS
from kvoff.remote.stats import WRITE, RemoteStats

__all__ = ["WriteBehind"]


@dataclass(eq=False)
class _Pending:
    key: bytes
    # copy=True: the whole value, payload filled in, header written by the writer thread.
    value: memoryview | None
    # copy=False: the caller's bytes, copied into a value by the writer thread.
    borrowed: memoryview | None
    token: object
    nbytes: int
    # copy=False: the value the writer built from ``borrowed``.
    built: memoryview | None = None

    def recycle(self) -> None:
        """Hand the value buffers back to the pool (nothing reads them any more)."""
        for view in (self.value, self.built):
            if view is not None:
                BUFFERS.give(view.obj)
        self.value = self.built = None


class WriteBehind:
    """A bounded write-behind queue drained by ``num_threads`` threads (see the module doc)."""

    def __init__(
        self,
        link: Link,
        keyspace: Keyspace,
        stats: RemoteStats,
        *,
        max_queue_blocks: int = 256,
        max_queue_bytes: int = 1 << 30,
        batch_blocks: int = 4,
        num_threads: int = 2,
        ttl_seconds: float | None = None,
        skip_existing: bool = True,
    ) -> None:
        value_bytes = HEADER_BYTES + keyspace.block_bytes
        if max_queue_blocks <= 0 or batch_blocks <= 0 or num_threads <= 0:
            raise InvalidArgumentError(
                f"max_queue_blocks={max_queue_blocks}, batch_blocks={batch_blocks} and "
                f"num_threads={num_threads} must be positive"
            )
        if max_queue_bytes < value_bytes:
            raise InvalidArgumentError(
                f"max_queue_bytes={max_queue_bytes} cannot hold one value of {value_bytes} bytes"
            )
        if ttl_seconds is not None and not ttl_seconds > 0:
            raise InvalidArgumentError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        self.link = link
        self.keyspace = keyspace
        self.stats = stats
        self.max_queue_blocks = max_queue_blocks
        self.max_queue_bytes = max_queue_bytes
        self.batch_blocks = batch_blocks
        self.ttl_ms = None if ttl_seconds is None else max(1, round(ttl_seconds * 1000))
        self.skip_existing = skip_existing
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_keys: set[bytes] = set()
        self._queued_bytes = 0
        self._in_flight = 0
        self._released: list[object] = []
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"kvoff-remote-write-{i}", daemon=True)
            for i in range(num_threads)
        ]
        for t in self._threads:
            t.start()

    # -- called by the step thread (never blocks on the network) --------------------------

    def enqueue(
        self, block_hash: BlockHash, data: Any, *, copy: bool = True, token: object = None
    ) -> bool:
        """Queue one block (``block_bytes`` long) for writing. ``False`` if it was already
        queued (nothing changes; with ``copy=False`` its token is released at once).

        Bad input (wrong size, not a buffer, a bad hash) raises :class:`InvalidArgumentError`
        (or :class:`HashTypeError`) with nothing queued.
        """
        key = self.keyspace.key(block_hash)
        src = as_readable(data, self.keyspace.block_bytes, what="a block to write")
        if self._closed:
            raise InvalidArgumentError("the write-behind queue is closed")
        with self._cond:
            duplicate = key in self._queued_keys
        if duplicate:
            if not copy:
                self._release([token])
            return False
        if copy:
            value = memoryview(BUFFERS.take(HEADER_BYTES + src.nbytes))
            value[HEADER_BYTES:] = src
            entry = _Pending(key, value, None, token, value.nbytes)
        else:
            entry = _Pending(key, None, src, token, HEADER_BYTES + src.nbytes)
        dropped: list[_Pending] = []
        with self._cond:
            if key in self._queued_keys:  # raced with another enqueue of the same block
                dropped_dup = True
            else:
                dropped_dup = False
                while self._queue and (
                    len(self._queue) + 1 > self.max_queue_blocks
                    or self._queued_bytes + entry.nbytes > self.max_queue_bytes
                ):
                    old = self._queue.popleft()
                    self._forget(old)
                    dropped.append(old)
                self._queue.append(entry)
                self._queued_keys.add(key)
                self._queued_bytes += entry.nbytes
                self._gauges()
                self._cond.notify()
        if dropped_dup:
            entry.recycle()
            if not copy:
                self._release([token])
            return False
        self.stats.add("write_behind", "enqueued")
        if dropped:
            for d in dropped:
                d.recycle()
            self.stats.add("write_behind", "dropped", len(dropped))
            self._release([d.token for d in dropped if d.borrowed is not None])
        return True

    def take_released(self) -> list[object]:
        """Tokens of ``copy=False`` blocks whose bytes the tier no longer reads (written,
        dropped or failed): the caller may now reuse that memory."""
        with self._cond:
            out, self._released = self._released, []
        return out

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    # -- for shutdown, tests and benchmarks ------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued or being written; ``False`` if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads; what is still queued is dropped (tokens released)."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._queued_keys.clear()
            self._queued_bytes = 0
            self._gauges()
            self._cond.notify_all()
        self._release([p.token for p in left if p.borrowed is not None])
        for t in self._threads:
            t.join(timeout)

    # -- writer threads --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._write(batch)
            except Exception:  # a bug must not kill the thread; the batch counts as failed
                log.exception("remote write failed unexpectedly")
                self._fail(batch, time.perf_counter())
            finally:
                for p in batch:
                    p.recycle()
                with self._cond:
                    self._in_flight -= 1
                    for p in batch:
                        self._queued_keys.discard(p.key)
                    self._cond.notify_all()

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._queue and self.link.available():
                    break
                wait = self.link.retry_in() if self._queue else None
                self._cond.wait(wait if wait is None else max(wait, 0.001))
            batch: list[_Pending] = []
            while self._queue and len(batch) < self.batch_blocks:
                p = self._queue.popleft()
                self._queued_bytes -= p.nbytes
                batch.append(p)
            self._in_flight += 1
            self._gauges()
            return batch

    def _write(self, batch: list[_Pending]) -> None:
        began = time.perf_counter()
        try:
            if self.skip_existing:
                present = self.link.call(lambda c: pipelined(c, [("EXISTS", p.key) for p in batch]))
                todo = [p for p, n in zip(batch, present, strict=True) if n == 0]
                unknown = [p for p, n in zip(batch, present, strict=True) if _is_error(n)]
                if unknown:
                    # The server could not say: count it, and write those blocks anyway.
                    for n in present:
                        if _is_error(n):
                            self.stats.record_error(classify(n))
                    todo += unknown
                skipped = len(batch) - len(todo)
                if skipped:
                    self.stats.add("write_behind", "skipped_existing", skipped)
                keep = {id(p) for p in todo}
                self._release(
                    [p.token for p in batch if p.borrowed is not None and id(p) not in keep]
                )
            else:
                todo = batch
            if not todo:
                return
            values = [self._value(p) for p in todo]
            self._release([p.token for p in todo if p.borrowed is not None])
            cmds: list[tuple[Any, ...]] = []
            for p, v in zip(todo, values, strict=True):
                cmds.append(
                    ("SET", p.key, v)
                    if self.ttl_ms is None
                    else ("SET", p.key, v, "PX", self.ttl_ms)
                )
            results = self.link.call(lambda c: pipelined(c, cmds))
        except (Unavailable, RemoteFailure):
            self._fail(batch, began)
            return
        ok = [p for p, r in zip(todo, results, strict=True) if not _is_error(r)]
        bad = [p for p, r in zip(todo, results, strict=True) if _is_error(r)]
        for r in results:
            if _is_error(r):
                self.stats.record_error(classify(r))
        seconds = time.perf_counter() - began
        if ok:
            self.stats.record_op(
                WRITE,
                blocks=len(ok),
                nbytes=sum(p.nbytes for p in ok),
                seconds=seconds,
                success=True,
            )
            self.stats.add("write_behind", "written", len(ok))
        if bad:
            self.stats.record_op(
                WRITE,
                blocks=len(bad),
                nbytes=sum(p.nbytes for p in bad),
                seconds=seconds,
                success=False,
            )
            self.stats.add("write_behind", "failed", len(bad))

    def _value(self, p: _Pending) -> memoryview:
        if p.value is not None:
            p.value[:HEADER_BYTES] = encode_header(self.keyspace, p.key, p.value[HEADER_BYTES:])
            return p.value
        assert p.borrowed is not None
        p.built = build_value(
            self.keyspace, p.key, p.borrowed, BUFFERS.take(HEADER_BYTES + p.borrowed.nbytes)
        )
        return p.built

    def _fail(self, batch: list[_Pending], began: float) -> None:
        self._release([p.token for p in batch if p.borrowed is not None])
        self.stats.record_op(
            WRITE,
            blocks=len(batch),
            nbytes=sum(p.nbytes for p in batch),
            seconds=time.perf_counter() - began,
            success=False,
        )
        self.stats.add("write_behind", "failed", len(batch))

    def _forget(self, p: _Pending) -> None:
        self._queued_keys.discard(p.key)
        self._queued_bytes -= p.nbytes

    def _release(self, tokens: list[object]) -> None:
        if tokens:
            with self._cond:
                self._released.extend(tokens)

    def _gauges(self) -> None:
        self.stats.set_gauge("queue_depth", len(self._queue))
        self.stats.set_gauge("queue_bytes", self._queued_bytes)


def _is_error(result: object) -> bool:
    return isinstance(result, Exception)
