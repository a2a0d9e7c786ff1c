"""A small pure-Python model of ``kvoff.OffloadingManager`` with the same semantics.

It is the oracle the hypothesis state machine compares the Rust manager against, and the
baseline of ``benches/bench_manager.py``. It favours clarity, but uses the idiomatic fast
structures (dicts and ``OrderedDict``), as a careful Python implementation would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from kvoff import (
    HashTypeError,
    InvalidArgumentError,
    InvalidStateError,
    LoadStoreSpec,
    OffloadingEvent,
    PrepareStoreOutput,
    UnknownHashError,
)

Key = bytes | int
_BATCHED = (np.dtype(np.int64), np.dtype(np.uint64))
MAX_BLOCKS = 2**32 - 2
_INT_MIN, _INT_MAX = -(2**127), 2**127 - 1
_MAX_SHOWN = 64


def show(key: Key) -> str:
    """A key as the Rust core prints it in messages."""
    if isinstance(key, int):
        return str(key)
    out = []
    for c in key[:_MAX_SHOWN]:
        ch = chr(c)
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif 0x20 <= c <= 0x7E:
            out.append(ch)
        else:
            out.append(f"\\x{c:02x}")
    suffix = f"... ({len(key)} bytes)" if len(key) > _MAX_SHOWN else ""
    return "b'" + "".join(out) + "'" + suffix


class _Block:
    __slots__ = ("id", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.id = block_id
        self.ref_cnt = -1  # store in flight


class _Lru:
    def __init__(self) -> None:
        self.order: OrderedDict[Key, None] = OrderedDict()

    def insert(self, key: Key) -> None:
        self.order[key] = None

    def touch(self, key: Key, block: _Block | None) -> None:
        if block is not None:
            self.order.move_to_end(key)

    def evict(self, key: Key) -> None:
        del self.order[key]

    remove = evict

    def victims(self, n: int, evictable: Callable[[Key], bool]) -> list[Key] | None:
        out: list[Key] = []
        for key in self.order:
            if len(out) == n:
                break
            if evictable(key):
                out.append(key)
        return out if len(out) == n else None

    def state(self) -> dict[str, Any]:
        return {"lru": list(self.order)}


def _next_evictable(it: Iterable[Key], evictable: Callable[[Key], bool]) -> Key | None:
    for key in it:
        if evictable(key):
            return key
    return None


class _Arc:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.target = 0
        self.t1: OrderedDict[Key, None] = OrderedDict()
        self.t2: OrderedDict[Key, None] = OrderedDict()
        self.b1: OrderedDict[Key, None] = OrderedDict()
        self.b2: OrderedDict[Key, None] = OrderedDict()

    def insert(self, key: Key) -> None:
        if key in self.b1 or key in self.b2:
            self.b1.pop(key, None)
            self.b2.pop(key, None)
            self.t2[key] = None
        else:
            self.t1[key] = None

    def touch(self, key: Key, block: _Block | None) -> None:
        if block is None:
            if key in self.b1:
                step = max(1, len(self.b2) // len(self.b1))
                self.target = min(self.target + step, self.capacity)
                self.b1.move_to_end(key)
            elif key in self.b2:
                step = max(1, len(self.b1) // len(self.b2))
                self.target = max(self.target - step, 0)
                self.b2.move_to_end(key)
        elif key in self.t1:
            if block.ref_cnt == -1:
                self.t1.move_to_end(key)
            else:
                del self.t1[key]
                self.t2[key] = None
        else:
            self.t2.move_to_end(key)

    def evict(self, key: Key) -> None:
        t, b = (self.t1, self.b1) if key in self.t1 else (self.t2, self.b2)
        del t[key]
        b[key] = None
        if len(b) > self.capacity:
            b.popitem(last=False)

    def remove(self, key: Key) -> None:
        if key in self.t1:
            del self.t1[key]
        else:
            del self.t2[key]

    def victims(self, n: int, evictable: Callable[[Key], bool]) -> list[Key] | None:
        it1, it2 = iter(self.t1), iter(self.t2)
        c1, c2 = _next_evictable(it1, evictable), _next_evictable(it2, evictable)
        t1_len, out = len(self.t1), []
        for _ in range(n):
            if c1 is not None and (t1_len > self.target or c2 is None):
                out.append(c1)
                t1_len -= 1
                c1 = _next_evictable(it1, evictable)
            elif c2 is not None:
                out.append(c2)
                c2 = _next_evictable(it2, evictable)
            else:
                return None
        return out

    def state(self) -> dict[str, Any]:
        return {
            "t1": list(self.t1),
            "t2": list(self.t2),
            "b1": list(self.b1),
            "b2": list(self.b2),
            "target": self.target,
        }


def _keys(hashes: Any) -> list[Key]:
    if isinstance(hashes, (bytes, str, int)):
        raise HashTypeError(
            "block hashes must be a sequence of bytes or int hashes, "
            f"got a single {type(hashes).__name__}"
        )
    if isinstance(hashes, np.ndarray) and hashes.ndim == 1 and hashes.dtype in _BATCHED:
        keys: list[Key] = hashes.tolist()
    elif isinstance(hashes, np.ndarray) and not (hashes.ndim == 1 and hashes.dtype.kind == "O"):
        raise HashTypeError(_array_form_message(hashes))
    else:
        try:
            keys = list(hashes)
        except TypeError:
            raise HashTypeError(
                "block hashes must be a sequence of bytes or int hashes, or an int64/uint64 "
                f"numpy array, got {type(hashes).__name__}"
            ) from None
    for i, key in enumerate(keys):
        if isinstance(key, int):
            if not _INT_MIN <= key <= _INT_MAX:
                raise InvalidArgumentError(
                    f"int block hash {key!r} at position {i} is outside the 128-bit signed "
                    "range [-2**127, 2**127 - 1]"
                )
        elif not isinstance(key, bytes):
            raise HashTypeError(
                f"block hash at position {i} must be bytes or int, "
                f"got {type(key).__name__}: {key!r}"
            )
    return keys


def _array_form_message(array: np.ndarray) -> str:
    order = {">": "big-endian ", "<": "little-endian "}.get(array.dtype.byteorder, "")
    if array.ndim != 1:
        hint = "; pass a list of hashes, or a 1-D array"
    else:
        hint = {
            "i": "; convert it with .astype(numpy.int64)",
            "u": "; convert it with .astype(numpy.uint64)",
        }.get(array.dtype.kind, "")
    return (
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        f"got a {array.ndim}-D array of {order}{array.dtype.name}{hint}"
    )


def _no_duplicates(keys: Sequence[Key], call: str) -> None:
    seen: set[Key] = set()
    for key in keys:
        if key in seen:
            raise InvalidArgumentError(f"duplicate block hash {show(key)} in one {call} call")
        seen.add(key)


class ReferenceManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        policy: str = "lru",
        enable_events: bool = False,
    ) -> None:
        if not 1 <= num_blocks <= MAX_BLOCKS:
            raise InvalidArgumentError(
                f"num_blocks must be between 1 and {MAX_BLOCKS}, got {num_blocks}"
            )
        if block_size <= 0:
            raise InvalidArgumentError(f"block_size must be positive, got {block_size}")
        if policy not in ("lru", "arc"):
            raise InvalidArgumentError(
                f'unknown eviction policy "{policy}": expected "lru" or "arc"'
            )
        self.capacity = num_blocks
        self.block_size = block_size
        self.policy = policy
        self._policy = _Lru() if policy == "lru" else _Arc(num_blocks)
        self._blocks: dict[Key, _Block] = {}
        self._next_fresh = 0
        self._freed: list[int] = []
        self._events: list[OffloadingEvent] | None = [] if enable_events else None
        self.pinned = 0
        self.blocks_queried = self.blocks_hit = self.blocks_stored = 0
        self.blocks_evicted = self.allocation_failures = 0

    @property
    def resident(self) -> int:
        return len(self._blocks)

    @property
    def free(self) -> int:
        return self.capacity - len(self._blocks)

    def _allocate(self) -> int:
        if self._next_fresh < self.capacity:
            self._next_fresh += 1
            return self._next_fresh - 1
        return self._freed.pop()

    def lookup(self, block_hashes: Any) -> int:
        keys = _keys(block_hashes)
        hit = 0
        for key in keys:
            block = self._blocks.get(key)
            if block is None or block.ref_cnt < 0:
                break
            hit += 1
        self.blocks_queried += len(keys)
        self.blocks_hit += hit
        return hit

    def _resolve(
        self, block_hashes: Any, call: str, check: Callable[[Key, _Block], None]
    ) -> list[_Block]:
        """The blocks of a call, checked first to last: unknown hash, then `check`."""
        keys = _keys(block_hashes)
        _no_duplicates(keys, call)
        blocks = []
        for key in keys:
            block = self._blocks.get(key)
            if block is None:
                raise UnknownHashError(f"unknown block hash {show(key)} passed to {call}")
            check(key, block)
            blocks.append(block)
        return blocks

    def prepare_load(self, block_hashes: Any) -> LoadStoreSpec:
        def ready(key: Key, block: _Block) -> None:
            if block.ref_cnt < 0:
                raise InvalidStateError(
                    f"block hash {show(key)} is not ready (its store is in flight): "
                    "cannot prepare_load it"
                )

        blocks = self._resolve(block_hashes, "prepare_load", ready)
        for block in blocks:
            self.pinned += block.ref_cnt == 0
            block.ref_cnt += 1
        return LoadStoreSpec([b.id for b in blocks])

    def complete_load(self, block_hashes: Any) -> None:
        def loading(key: Key, block: _Block) -> None:
            if block.ref_cnt <= 0:
                raise InvalidStateError(
                    f"complete_load of block hash {show(key)}, which has no load in flight"
                )

        for block in self._resolve(block_hashes, "complete_load", loading):
            block.ref_cnt -= 1
            self.pinned -= block.ref_cnt == 0

    def touch(self, block_hashes: Any) -> None:
        keys = _keys(block_hashes)
        _no_duplicates(keys, "touch")
        for key in reversed(keys):
            self._policy.touch(key, self._blocks.get(key))

    def prepare_store(self, block_hashes: Any) -> PrepareStoreOutput | None:
        keys = _keys(block_hashes)
        _no_duplicates(keys, "prepare_store")
        blocks = self._blocks
        to_store = [key for key in keys if key not in blocks]
        victims: list[Key] = []
        need = len(to_store) - self.free
        if need > 0:
            protected = {key for key in keys if key in blocks}
            found = self._policy.victims(
                need, lambda k: blocks[k].ref_cnt == 0 and k not in protected
            )
            if found is None:
                self.allocation_failures += 1
                return None
            victims = found
        for key in victims:
            self._freed.append(blocks.pop(key).id)
            self._policy.evict(key)
        ids = []
        for key in to_store:
            block = blocks[key] = _Block(self._allocate())
            self._policy.insert(key)
            ids.append(block.id)
        self.pinned += len(to_store)
        self.blocks_stored += len(to_store)
        self.blocks_evicted += len(victims)
        if self._events is not None and victims:
            self._events.append(OffloadingEvent(victims, self.block_size, "CPU", True))
        return PrepareStoreOutput(to_store, LoadStoreSpec(ids), victims)

    def complete_store(self, block_hashes: Any, success: bool = True) -> None:
        if not isinstance(success, (bool, np.bool_)):
            raise InvalidArgumentError(
                "complete_store's success must be a bool, "
                f"got {type(success).__name__}: {success!r}"
            )
        keys = _keys(block_hashes)
        _no_duplicates(keys, "complete_store")
        for key in keys:
            if key not in self._blocks:
                raise UnknownHashError(
                    f"unknown block hash {show(key)} passed to complete_store "
                    "(never prepared, or already gone)"
                )
        stored = []
        for key in keys:
            block = self._blocks[key]
            if block.ref_cnt != -1:
                continue
            self.pinned -= 1
            if success:
                block.ref_cnt = 0
                stored.append(key)
            else:
                del self._blocks[key]
                self._policy.remove(key)
                self._freed.append(block.id)
        if self._events is not None and stored:
            self._events.append(OffloadingEvent(stored, self.block_size, "CPU", False))

    def take_events(self) -> list[OffloadingEvent]:
        if self._events is None:
            return []
        events, self._events = self._events, []
        return events

    def block_state(self, block_hash: Key) -> int:
        return self._known(block_hash).ref_cnt

    def block_id(self, block_hash: Key) -> int:
        return self._known(block_hash).id

    def _known(self, key: Key) -> _Block:
        block = self._blocks.get(key)
        if block is None:
            raise UnknownHashError(f"unknown block hash {show(key)}")
        return block

    def __contains__(self, block_hash: Key) -> bool:
        return block_hash in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def policy_state(self) -> dict[str, Any]:
        return self._policy.state()
