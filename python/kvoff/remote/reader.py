"""Reads: existence checks for the scheduler, fetches into CPU blocks for the worker.

Both are poll-style: the step thread submits and later collects; only background threads talk
to the server, each call bounded by the config's socket timeout, and while the link is down
a submitted request completes at once as a miss / failure without touching the network.

:class:`RemoteLookup` answers "how many of these consecutive blocks does the remote tier
hold, from the first": all requests queued since its thread last woke go out as one pipeline
of EXISTS (one round trip for all of them), and each counts its leading run of hits. With
several key spaces (one per tensor-parallel rank) a block counts only if every rank's key
exists.

:class:`RemoteFetcher` GETs blocks (pipelines of ``batch_blocks``, spread over its threads),
checks each value (:func:`kvoff.remote.codec.decode`) and only then copies its payload into the
caller's destination buffer. A rejected, missing or failed block leaves its destination
untouched and comes back ``False``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvoff.errors import InvalidArgumentError, UnknownJobError
from kvoff.remote.buffers import as_writable
from kvoff.remote.codec import Rejected, decode
from kvoff.remote.keys import BlockHash, Keyspace
from kvoff.remote.link import Link, RemoteFailure, Unavailable, classify, log, pipelined
from kvoff.remote.resp import BUFFERS
from kvoff.remote.stats import READ, RemoteStats

__all__ = ["FetchResult", "LookupResult", "RemoteFetcher", "RemoteLookup"]


@dataclass(frozen=True)
class LookupResult:
    """``hits``: leading blocks present. ``ok``: ``False`` if the tier could not answer (then
    ``hits`` is 0: a remote failure is a miss)."""

    hits: int
    ok: bool


@dataclass(frozen=True)
class FetchResult:
    """Per block, in submission order, whether its destination now holds verified bytes."""

    job_id: int
    ok: tuple[bool, ...]
    nbytes: int
    seconds: float

    @property
    def success(self) -> bool:
        return all(self.ok)


class RemoteLookup:
    """Batched existence checks on one background thread (see the module doc)."""

    def __init__(
        self,
        link: Link,
        keyspaces: Sequence[Keyspace],
        stats: RemoteStats,
        *,
        max_blocks: int = 256,
    ) -> None:
        if not keyspaces:
            raise InvalidArgumentError("RemoteLookup needs at least one key space")
        if max_blocks <= 0:
            raise InvalidArgumentError(f"max_blocks must be positive, got {max_blocks}")
        self.link = link
        self.keyspaces = tuple(keyspaces)
        self.stats = stats
        self.max_blocks = max_blocks
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[int, list[list[bytes]]]] = collections.deque()
        self._done: dict[int, LookupResult] = {}
        self._pending: set[int] = set()
        self._next_id = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="kvoff-remote-lookup", daemon=True)
        self._thread.start()

    def submit(self, block_hashes: Sequence[BlockHash]) -> int:
        """Ask about ``block_hashes`` (consecutive blocks of one prefix; at most ``max_blocks``
        are checked). Returns an id for :meth:`poll`; never blocks."""
        hashes = list(block_hashes)[: self.max_blocks]
        keys = [[ks.key(h) for ks in self.keyspaces] for h in hashes]
        with self._cond:
            if self._closed:
                raise InvalidArgumentError("the remote lookup is closed")
            lid = self._next_id
            self._next_id += 1
            self._pending.add(lid)
            if not keys:
                self._finish(lid, LookupResult(0, True))
            elif not self.link.available():
                self._finish(lid, LookupResult(0, False))
            else:
                self._queue.append((lid, keys))
                self._cond.notify()
        return lid

    def poll(self, lookup_id: int) -> LookupResult | None:
        """The answer once it is there (then the id is forgotten), else ``None``."""
        with self._cond:
            if lookup_id in self._done:
                self._pending.discard(lookup_id)
                return self._done.pop(lookup_id)
            if lookup_id not in self._pending:
                raise UnknownJobError(f"unknown or already collected lookup id {lookup_id}")
            return None

    def cancel(self, lookup_id: int) -> None:
        """Forget a lookup whose answer is no longer wanted (a request that went away)."""
        with self._cond:
            self._pending.discard(lookup_id)
            self._done.pop(lookup_id, None)

    def wait(self, lookup_id: int, timeout: float) -> LookupResult | None:
        """Blocking form of :meth:`poll`, for tests and tools (never for a step)."""
        deadline = time.monotonic() + timeout
        while (r := self.poll(lookup_id)) is None and time.monotonic() < deadline:
            with self._cond:
                self._cond.wait(0.01)
        return r

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            for lid, _ in self._queue:
                self._finish(lid, LookupResult(0, False))
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)

    def _finish(self, lid: int, result: LookupResult) -> None:
        if lid in self._pending:
            self._done[lid] = result
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = list(self._queue)
                self._queue.clear()
            try:
                results = self._check(batch)
            except Exception:  # a bug must not kill the thread; these lookups are misses
                log.exception("remote lookup failed unexpectedly")
                results = [LookupResult(0, False) for _ in batch]
            with self._cond:
                for (lid, _), result in zip(batch, results, strict=True):
                    self._finish(lid, result)

    def _check(self, batch: list[tuple[int, list[list[bytes]]]]) -> list[LookupResult]:
        cmds = [("EXISTS", k) for _, keys in batch for per_block in keys for k in per_block]
        try:
            flags = self.link.call(lambda c: pipelined(c, cmds))
        except (Unavailable, RemoteFailure):
            return [LookupResult(0, False) for _ in batch]
        out: list[LookupResult] = []
        pos = 0
        for _, keys in batch:
            hits, counting, ok = 0, True, True
            for per_block in keys:
                answers = flags[pos : pos + len(per_block)]
                pos += len(per_block)
                errors = [f for f in answers if isinstance(f, Exception)]
                for err in errors:
                    self.link.failed(classify(err), err)
                if not counting:
                    continue
                if all(f == 1 for f in answers):
                    hits += 1
                else:
                    # A run cut short by an error is an answer the tier could not give.
                    counting, ok = False, not errors
            self.stats.record_lookup(len(keys), hits)
            out.append(LookupResult(hits if ok else 0, ok))
        return out


@dataclass(eq=False)
class _Job:
    job_id: int
    keys: list[bytes]
    dests: list[np.ndarray]
    ok: list[bool]
    chunks_left: int
    began: float


class RemoteFetcher:
    """Background GETs into caller-provided buffers (see the module doc)."""

    def __init__(
        self,
        link: Link,
        keyspace: Keyspace,
        stats: RemoteStats,
        *,
        num_threads: int = 2,
        batch_blocks: int = 2,
    ) -> None:
        if num_threads <= 0 or batch_blocks <= 0:
            raise InvalidArgumentError(
                f"num_threads={num_threads} and batch_blocks={batch_blocks} must be positive"
            )
        self.link = link
        self.keyspace = keyspace
        self.stats = stats
        self.batch_blocks = batch_blocks
        self._cond = threading.Condition()
        self._chunks: collections.deque[tuple[_Job, range]] = collections.deque()
        self._jobs: dict[int, _Job] = {}
        self._finished: list[FetchResult] = []
        self._next_id = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"kvoff-remote-fetch-{i}", daemon=True)
            for i in range(num_threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, items: Sequence[tuple[BlockHash, Any]]) -> int:
        """Fetch each ``(block_hash, destination)``; a destination is a writable CPU buffer of
        ``block_bytes`` (e.g. the CPU tier's ``cpu_block(j)`` view). Returns a job id whose
        :class:`FetchResult` :meth:`get_finished` hands back once. Bad input raises
        :class:`InvalidArgumentError` with nothing submitted."""
        n = self.keyspace.block_bytes
        keys = [self.keyspace.key(h) for h, _ in items]
        if len(set(keys)) != len(keys):
            raise InvalidArgumentError("a fetch names the same block twice")
        dests = [
            np.frombuffer(as_writable(d, n, what="a fetch destination"), dtype=np.uint8)
            for _, d in items
        ]
        with self._cond:
            if self._closed:
                raise InvalidArgumentError("the remote fetcher is closed")
            job_id = self._next_id
            self._next_id += 1
            step = self.batch_blocks
            spans = [range(i, min(i + step, len(keys))) for i in range(0, len(keys), step)]
            job = _Job(job_id, keys, dests, [False] * len(keys), len(spans), time.perf_counter())
            if not spans or not self.link.available():
                # Nothing to do, or the tier is down: done now, without the network.
                self._complete(job)
            else:
                self._jobs[job_id] = job
                self._chunks.extend((job, s) for s in spans)
                self._cond.notify_all()
        return job_id

    def get_finished(self) -> list[FetchResult]:
        """Results of jobs finished since the last call; never blocks."""
        with self._cond:
            out, self._finished = self._finished, []
        return out

    def wait(self, job_ids: Sequence[int], timeout: float) -> list[FetchResult]:
        """Blocking collection of ``job_ids`` (tests and tools only); results of other jobs
        stay for :meth:`get_finished`."""
        wanted = set(job_ids)
        got: dict[int, FetchResult] = {}
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                keep = []
                for r in self._finished:
                    if r.job_id in wanted:
                        got[r.job_id] = r
                    else:
                        keep.append(r)
                self._finished = keep
                if wanted <= got.keys() or time.monotonic() >= deadline:
                    break
                self._cond.wait(0.05)
        return [got[j] for j in job_ids if j in got]

    @property
    def num_in_flight(self) -> int:
        return len(self._jobs)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads. Chunks not started fail; a chunk being fetched finishes first, so
        no destination is written after its job was reported."""
        with self._cond:
            self._closed = True
            for job, _ in self._chunks:
                job.chunks_left -= 1
                if job.chunks_left == 0 and self._jobs.pop(job.job_id, None) is not None:
                    self._complete(job)
            self._chunks.clear()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    def _complete(self, job: _Job) -> None:
        n = self.keyspace.block_bytes
        self._finished.append(
            FetchResult(job.job_id, tuple(job.ok), n * sum(job.ok), time.perf_counter() - job.began)
        )
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job, span = self._chunks.popleft()
            try:
                self._fetch(job, span)
            except Exception:  # a bug must not kill the thread; the chunk's blocks stay failed
                log.exception("remote fetch failed unexpectedly")
            with self._cond:
                job.chunks_left -= 1
                if job.chunks_left == 0 and self._jobs.pop(job.job_id, None) is not None:
                    self._complete(job)

    def _fetch(self, job: _Job, span: range) -> None:
        keys = [job.keys[i] for i in span]
        n = self.keyspace.block_bytes
        began = time.perf_counter()
        try:
            values = self.link.call(lambda c: pipelined(c, [("GET", k) for k in keys]))
        except (Unavailable, RemoteFailure):
            self.stats.record_op(
                READ, blocks=len(keys), nbytes=len(keys) * n, seconds=0.0, success=False
            )
            return
        got = 0
        for i, key, value in zip(span, keys, values, strict=True):
            if value is None:
                self.stats.add("fetch", "blocks_missing")
                continue
            if isinstance(value, Exception):
                self.link.failed(classify(value), value)
                continue
            try:
                payload = decode(value, self.keyspace, key)
            except Rejected as bad:
                self.stats.record_error(bad.kind)
                BUFFERS.give(value)
                continue
            np.copyto(job.dests[i], np.frombuffer(payload, dtype=np.uint8))
            del payload
            BUFFERS.give(value)
            job.ok[i] = True
            got += 1
        seconds = time.perf_counter() - began
        if got:
            self.stats.record_op(
                READ,
                blocks=got,
                nbytes=got * self.keyspace.block_bytes,
                seconds=seconds,
                success=True,
            )
        if got < len(keys):
            missed = len(keys) - got
            self.stats.record_op(
                READ, blocks=missed, nbytes=missed * n, seconds=seconds, success=False
            )
