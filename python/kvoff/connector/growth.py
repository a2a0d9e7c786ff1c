"""The growing CPU tier, scheduler side: how many CPU blocks the manager may hand out.

A worker whose tier is allocated (pinned) in the background can use only CPU blocks
``[0, ready)``, and ``ready`` grows chunk by chunk. Each :class:`WorkerOutput` carries its rank's
count; a block id is safe to hand out only once every rank holds it, so the manager's usable
limit is the minimum over the ranks (a rank not heard from yet counts as 0), capped at the
manager's capacity. The manager hands out fresh ids lowest first, so raising its limit is all it
takes for no block in a chunk still being pinned ever to be named in a transfer.
"""

from __future__ import annotations

import operator

from kvoff._core import OffloadingManager
from kvoff.errors import InvalidArgumentError, InvalidStateError

__all__ = ["UsableLimit"]


class UsableLimit:
    """Per-rank ready counts and the limit they allow, applied to ``manager``."""

    def __init__(self, manager: OffloadingManager, num_workers: int) -> None:
        self._manager = manager
        self._num_workers = num_workers
        self._ready: dict[int, int] = {}

    def check(self, rank: int, ready: object) -> int | None:
        """``ready`` as an int, or None when not reported; raises (changing nothing) for a
        count that is not a non-negative int, or one below what this rank reported before (a
        tier never shrinks: the output is stale, or from another worker)."""
        if ready is None:
            return None
        try:
            if isinstance(ready, bool):
                raise TypeError
            n = operator.index(ready)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentError(
                f"rank {rank}: WorkerOutput.ready_cpu_blocks must be a non-negative int or "
                f"None, got {type(ready).__name__} {ready!r}; nothing was applied"
            ) from None
        if n < 0:
            raise InvalidArgumentError(
                f"rank {rank}: WorkerOutput.ready_cpu_blocks must be a non-negative int or "
                f"None, got {n}; nothing was applied"
            )
        before = self._ready.get(rank, 0)
        if n < before:
            raise InvalidStateError(
                f"rank {rank} reported {n} ready CPU blocks after {before}: a tier only grows "
                "(is this output stale, or from another worker?); nothing was applied"
            )
        return n

    def apply(self, rank: int, ready: int | None) -> None:
        """Record a count :meth:`check` returned and raise the manager's limit to what every
        rank now holds."""
        if ready is None:
            return
        self._ready[rank] = ready
        if len(self._ready) < self._num_workers:
            return  # a rank not heard from holds nothing yet
        usable = min(min(self._ready.values()), self._manager.capacity)
        if usable > self._manager.usable_blocks:
            self._manager.set_usable_blocks(usable)

    def ready_by_rank(self) -> dict[int, int]:
        """The latest count each rank reported (ranks that reported none are left out)."""
        return dict(sorted(self._ready.items()))
