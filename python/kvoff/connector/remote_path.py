"""The scheduler's side of the remote tier: which blocks to ask it for, the fetches into CPU
blocks, the write pins, and which tier served each hit.

Nothing here waits on the network: a lookup is submitted and polled on later steps, a fetch
runs on the workers' threads and comes back in their outputs. A request whose blocks the remote
tier may hold is answered ``None`` ("ask again next step") until they are in the CPU tier; then
the usual CPU-to-GPU load serves them. docs/REMOTE.md ("Phase B") describes the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kvoff._core import OffloadingManager
from kvoff.connector.messages import BlockHash, RemoteFetchSpec, RemoteWriteSpec
from kvoff.errors import InvalidArgumentError, InvalidStateError

if TYPE_CHECKING:
    from kvoff.remote import RemoteTier

__all__ = ["RemotePath"]


@dataclass
class _Ask:
    """One request's question to the remote tier (at most one per admission)."""

    lookup_id: int | None
    names: list[BlockHash]
    steps_waited: int = 0
    fetch_id: int | None = None
    # Hashes fetched from the remote tier for this request and now in the CPU tier.
    fetched: set[BlockHash] = field(default_factory=set)


@dataclass
class _Fetch:
    req_id: str
    hashes: list[BlockHash]
    # rank -> per-block ok, for every rank that reported (or was failed).
    outcomes: dict[int, tuple[bool, ...]] = field(default_factory=dict)


class RemotePath:
    """Owned by :class:`~kvoff.connector.OffloadingScheduler` (``remote=``)."""

    def __init__(
        self,
        tier: RemoteTier,
        manager: OffloadingManager,
        num_workers: int,
        new_id: Callable[[], int],
        *,
        max_wait_steps: int,
        max_write_pins: int | None,
    ) -> None:
        if tier.lookup is None:
            raise InvalidArgumentError(
                "the scheduler's RemoteTier needs lookups (RemoteTier.for_scheduler)"
            )
        if max_wait_steps < 0:
            raise InvalidArgumentError(f"remote_max_wait_steps must be >= 0, got {max_wait_steps}")
        pins = manager.capacity // 2 if max_write_pins is None else max_write_pins
        if pins < 0:
            raise InvalidArgumentError(f"remote_max_write_pins must be >= 0, got {pins}")
        self.tier = tier
        self.lookup = tier.lookup
        self.manager = manager
        self.num_workers = num_workers
        self._new_id = new_id
        self.max_wait_steps = max_wait_steps
        self.max_write_pins = pins
        self._asks: dict[str, _Ask] = {}
        self._fetches: dict[int, _Fetch] = {}
        # CPU hashes being fetched -> fetch id: a request needing one waits for it.
        self._fetching: dict[BlockHash, int] = {}
        self._pending_fetches: list[RemoteFetchSpec] = []
        self._pending_writes: list[RemoteWriteSpec] = []
        # Hashes pinned for a write -> ranks that have not released them yet.
        self._write_pins: dict[BlockHash, set[int]] = {}
        self.lookup_timeouts = 0
        self.fetched_blocks = 0
        self.failed_fetch_blocks = 0
        self.writes_offered = 0
        self.writes_skipped = 0

    # -- matching -----------------------------------------------------------------------

    def match(self, req_id: str, names: list[BlockHash], hits: int) -> bool:
        """``True``: hold the request this step ("ask again next step"); ``False``: go on with
        the CPU tier's ``hits`` now."""
        ask = self._asks.get(req_id)
        if hits < len(names) and names[hits] in self._fetching:
            return True  # the next block is on its way into the CPU tier
        if ask is None:
            if hits == len(names) or not self.tier.link.available():
                return False
            rest = names[hits:]
            self._asks[req_id] = _Ask(self.lookup.submit(rest), rest)
            return True
        if ask.lookup_id is None:
            return False  # asked already for this admission: the answer was used
        result = self.lookup.poll(ask.lookup_id)
        if result is None:
            ask.steps_waited += 1
            if ask.steps_waited <= self.max_wait_steps:
                return True
            self.lookup.cancel(ask.lookup_id)
            ask.lookup_id = None
            self.lookup_timeouts += 1
            return False
        ask.lookup_id = None
        if result.hits == 0:
            return False
        # Names the CPU hits too, so the room made for the fetch is never theirs.
        wanted = list(dict.fromkeys([*names[:hits], *ask.names[: result.hits]]))
        out = self.manager.prepare_store(wanted)
        if out is None or not out.block_hashes_to_store:
            return False
        got = list(out.block_hashes_to_store)
        fid = self._new_id()
        self._fetches[fid] = _Fetch(req_id, got)
        for h in got:
            self._fetching[h] = fid
        ask.fetch_id = fid
        self._pending_fetches.append(
            RemoteFetchSpec(fid, req_id, got, out.store_spec.block_ids.copy())
        )
        return True

    def take_fetched(self, req_id: str) -> set[BlockHash]:
        """The request is being admitted: the blocks fetched from the remote tier for it (now
        in the CPU tier), and its question is done."""
        ask = self._asks.pop(req_id, None)
        if ask is None:
            return set()
        if ask.lookup_id is not None:
            self.lookup.cancel(ask.lookup_id)
        return ask.fetched

    def forget(self, req_id: str) -> None:
        """The request went away: drop its question (a fetch in flight still completes)."""
        ask = self._asks.pop(req_id, None)
        if ask is not None and ask.lookup_id is not None:
            self.lookup.cancel(ask.lookup_id)

    # -- steps and outputs ----------------------------------------------------------------

    def take_step(self) -> tuple[list[RemoteFetchSpec], list[RemoteWriteSpec]]:
        fetches, self._pending_fetches = self._pending_fetches, []
        writes, self._pending_writes = self._pending_writes, []
        return fetches, writes

    def stored(self, hashes: list[BlockHash]) -> None:
        """A store to the CPU tier succeeded on every rank: offer the blocks to the remote tier,
        pinned (a read pin) until every rank's writer has read them."""
        room = self.max_write_pins - len(self._write_pins)
        if not self.tier.link.available() or room <= 0:
            self.writes_skipped += len(hashes)
            return
        offer = [h for h in hashes if h not in self._write_pins][:room]
        self.writes_skipped += len(hashes) - len(offer)
        if not offer:
            return
        spec = self.manager.prepare_load(offer)
        for h in offer:
            self._write_pins[h] = set(range(self.num_workers))
        self.writes_offered += len(offer)
        self._pending_writes.append(RemoteWriteSpec(offer, spec.block_ids.copy()))

    def check_output(
        self, rank: int, fetches: list[tuple[int, tuple[bool, ...]]], released: list[BlockHash]
    ) -> None:
        """Refuse (before anything is applied) what cannot be one rank's honest report."""
        ids = [fid for fid, _ in fetches]
        unknown = [fid for fid in ids if fid not in self._fetches]
        if unknown:
            raise InvalidStateError(
                f"rank {rank} reported unknown remote fetch ids {unknown}; nothing was applied"
            )
        if len(set(ids)) != len(ids) or any(rank in self._fetches[f].outcomes for f in ids):
            raise InvalidStateError(
                f"rank {rank} reported remote fetch ids {ids} twice; nothing was applied"
            )
        for fid, ok in fetches:
            n = len(self._fetches[fid].hashes)
            if len(ok) != n:
                raise InvalidStateError(
                    f"rank {rank} reported {len(ok)} results for remote fetch {fid} of {n} "
                    "blocks; nothing was applied"
                )
        stray = [h for h in released if rank not in self._write_pins.get(h, ())]
        if stray or len(set(released)) != len(released):
            raise InvalidStateError(
                f"rank {rank} released remote writes it does not hold ({stray or released}); "
                "nothing was applied"
            )

    def apply_output(
        self, rank: int, fetches: list[tuple[int, tuple[bool, ...]]], released: list[BlockHash]
    ) -> None:
        for fid, ok in fetches:
            f = self._fetches[fid]
            f.outcomes[rank] = tuple(bool(x) for x in ok)
            if len(f.outcomes) == self.num_workers:
                self._complete_fetch(fid, f)
        for h in released:
            self._release_pin(h, rank)

    def fail_rank(self, rank: int) -> None:
        for fid, f in list(self._fetches.items()):
            if rank not in f.outcomes:
                f.outcomes[rank] = (False,) * len(f.hashes)
                if len(f.outcomes) == self.num_workers:
                    self._complete_fetch(fid, f)
        for h in [h for h, ranks in self._write_pins.items() if rank in ranks]:
            self._release_pin(h, rank)

    # -- counters -------------------------------------------------------------------------

    @property
    def num_fetches_in_flight(self) -> int:
        return len(self._fetches)

    @property
    def num_write_pins(self) -> int:
        return len(self._write_pins)

    # -- internals ------------------------------------------------------------------------

    def _complete_fetch(self, fid: int, f: _Fetch) -> None:
        """Every rank reported: a block is good only if every rank fetched its shard."""
        del self._fetches[fid]
        good_mask = np.logical_and.reduce(
            [np.asarray(ok, dtype=bool) for ok in f.outcomes.values()]
        )
        good = [h for h, g in zip(f.hashes, good_mask, strict=True) if g]
        bad = [h for h, g in zip(f.hashes, good_mask, strict=True) if not g]
        if good:
            self.manager.complete_store(good, success=True)
        if bad:
            self.manager.complete_store(bad, success=False)
        for h in f.hashes:
            del self._fetching[h]
        self.fetched_blocks += len(good)
        self.failed_fetch_blocks += len(bad)
        ask = self._asks.get(f.req_id)
        if ask is not None and ask.fetch_id == fid:
            ask.fetch_id = None
            ask.fetched.update(good)

    def _release_pin(self, h: BlockHash, rank: int) -> None:
        ranks = self._write_pins[h]
        ranks.discard(rank)
        if not ranks:
            del self._write_pins[h]
            self.manager.complete_load([h])
