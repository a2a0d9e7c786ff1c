"""One object holding a process's side of the remote tier: link, stats and the parts it uses.

The scheduler process needs only lookups (``fetch=False, write=False``); a worker process needs
fetches and write-behind (``lookup=False``). Both build theirs from the same URL and a
:class:`RemoteLayout`; the scheduler passes ``lookup_ranks`` so that a block counts as present
only when every tensor-parallel rank's shard is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvoff.errors import InvalidArgumentError
from kvoff.remote.config import RemoteConfig
from kvoff.remote.keys import Keyspace, RemoteLayout
from kvoff.remote.link import Link
from kvoff.remote.reader import RemoteFetcher, RemoteLookup
from kvoff.remote.stats import RemoteStats
from kvoff.remote.writer import WriteBehind

__all__ = ["RemoteTier"]

BATCH_BYTES = 4 << 20


class RemoteTier:
    """The remote tier's parts for one process. ``lookup`` / ``fetcher`` / ``writer`` are
    ``None`` where not asked for. Nothing here connects on construction: a server that is
    down at start only makes the first operations miss."""

    def __init__(
        self,
        remote: str | RemoteConfig,
        layout: RemoteLayout,
        *,
        lookup: bool = True,
        fetch: bool = True,
        write: bool = True,
        lookup_ranks: Sequence[int] | None = None,
        prefix: str = "kvoff",
        fetch_threads: int = 2,
        fetch_batch_blocks: int | None = None,
        write_threads: int = 2,
        write_batch_blocks: int | None = None,
        max_queue_blocks: int = 256,
        max_queue_bytes: int = 1 << 30,
        ttl_seconds: float | None = None,
        skip_existing: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        stats: RemoteStats | None = None,
    ) -> None:
        config = remote if isinstance(remote, RemoteConfig) else RemoteConfig.from_url(remote)
        if not isinstance(layout, RemoteLayout):
            raise InvalidArgumentError(
                f"layout must be a RemoteLayout, got {type(layout).__name__}"
            )
        # Pipelines of about 4 MiB: big values gain nothing from deeper pipelines (measured in
        # docs/REMOTE.md) and a deep one holds that much more in the server's reply buffers.
        per_batch = max(1, BATCH_BYTES // layout.block_bytes)
        fetch_batch_blocks = per_batch if fetch_batch_blocks is None else fetch_batch_blocks
        write_batch_blocks = per_batch if write_batch_blocks is None else write_batch_blocks
        self.config = config
        self.layout = layout
        self.keyspace = Keyspace(layout, prefix=prefix)
        self.stats = stats if stats is not None else RemoteStats()
        threads = (1 if lookup else 0) + (fetch_threads if fetch else 0)
        threads += write_threads if write else 0
        self.link = Link(
            config,
            self.stats,
            max_connections=max(threads, 1) + 1,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.lookup: RemoteLookup | None = None
        self.fetcher: RemoteFetcher | None = None
        self.writer: WriteBehind | None = None
        if lookup:
            ranks = [layout.tp_rank] if lookup_ranks is None else list(lookup_ranks)
            spaces = [Keyspace(layout.for_rank(r), prefix=prefix) for r in ranks]
            self.lookup = RemoteLookup(self.link, spaces, self.stats)
        if fetch:
            self.fetcher = RemoteFetcher(
                self.link,
                self.keyspace,
                self.stats,
                num_threads=fetch_threads,
                batch_blocks=fetch_batch_blocks,
            )
        if write:
            self.writer = WriteBehind(
                self.link,
                self.keyspace,
                self.stats,
                max_queue_blocks=max_queue_blocks,
                max_queue_bytes=max_queue_bytes,
                batch_blocks=write_batch_blocks,
                num_threads=write_threads,
                ttl_seconds=ttl_seconds,
                skip_existing=skip_existing,
            )

    @classmethod
    def for_scheduler(
        cls, remote: str | RemoteConfig, layout: RemoteLayout, **kwargs: Any
    ) -> RemoteTier:
        """The scheduler process's tier (lookups only): a block counts as present only when
        every tensor-parallel rank's shard is (``layout.tp_size`` ranks). For
        ``OffloadingScheduler(..., remote=...)``."""
        return cls(
            remote,
            layout.for_rank(0),
            fetch=False,
            write=False,
            lookup_ranks=range(layout.tp_size),
            **kwargs,
        )

    @classmethod
    def for_worker(
        cls, remote: str | RemoteConfig, layout: RemoteLayout, rank: int = 0, **kwargs: Any
    ) -> RemoteTier:
        """One worker process's tier (fetches and write-behind) for tensor-parallel ``rank``:
        its keys name that rank's shard. For ``OffloadingWorker(..., remote=...)``."""
        return cls(remote, layout.for_rank(rank), lookup=False, **kwargs)

    def __repr__(self) -> str:
        parts = [n for n in ("lookup", "fetcher", "writer") if getattr(self, n) is not None]
        return f"RemoteTier({self.config.redacted_url!r}, {self.link.state}, parts={parts})"

    def close(self) -> None:
        for part in (self.writer, self.fetcher, self.lookup):
            if part is not None:
                part.close()
        self.link.close()

    def __enter__(self) -> RemoteTier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a RemoteTier holds threads and sockets and cannot be pickled")
