"""Type stubs for the extension module ``kvoff._core`` (hand-written; checked by mypy.stubtest)."""

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeAlias, final

import numpy as np
import numpy.typing as npt

__version__: str

# --- manager section (OffloadingManager, LoadStoreSpec, PrepareStoreOutput, OffloadingEvent) ---

_BlockHash: TypeAlias = bytes | int
# A list or tuple (or any iterable) of hashes, or the batched form: a 1-D int64/uint64 array.
_BlockHashes: TypeAlias = Iterable[_BlockHash] | npt.NDArray[np.int64] | npt.NDArray[np.uint64]

@final
class LoadStoreSpec:
    """CPU block ids for one load or store (``medium`` is ``"CPU"`` for the manager's specs).

    Frozen; ``block_ids`` is a read-only int64 numpy array. Compares by value and pickles.
    """

    def __new__(cls, block_ids: Iterable[int], medium: str = "CPU") -> LoadStoreSpec: ...
    @property
    def block_ids(self) -> npt.NDArray[np.int64]:
        """The CPU block ids, in the order of the hashes they belong to."""
    @property
    def medium(self) -> str:
        """Where the blocks live: ``"CPU"``."""
    def __len__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __reduce__(self) -> tuple[type[LoadStoreSpec], tuple[list[int], str]]: ...

@final
class PrepareStoreOutput:
    """What ``prepare_store`` decided.

    ``block_hashes_to_store``: the hashes of the call that were not yet present, in call order
    (the caller's own objects in a list; an array of the input's dtype for the batched form).
    ``store_spec``: their CPU block ids. ``block_hashes_evicted``: the hashes evicted to make
    room, in eviction order (the objects the caller stored them with; new ints for hashes that
    were stored from an array). Frozen, compares by value, pickles.
    """

    def __new__(
        cls,
        block_hashes_to_store: Sequence[_BlockHash] | npt.NDArray[Any],
        store_spec: LoadStoreSpec,
        block_hashes_evicted: Sequence[_BlockHash],
    ) -> PrepareStoreOutput: ...
    @property
    def block_hashes_to_store(self) -> list[_BlockHash] | npt.NDArray[Any]:
        """The hashes to store (those not already present), in call order."""
    @property
    def store_spec(self) -> LoadStoreSpec:
        """The CPU blocks allocated for them."""
    @property
    def block_hashes_evicted(self) -> list[_BlockHash]:
        """Hashes evicted to make room, in eviction order."""
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __reduce__(self) -> tuple[type[PrepareStoreOutput], tuple[Any, LoadStoreSpec, Any]]: ...

@final
class OffloadingEvent:
    """Blocks that became loadable (``removed=False``) or were evicted (``removed=True``).

    Frozen, compares by value, pickles.
    """

    def __new__(
        cls, block_hashes: Sequence[_BlockHash], block_size: int, medium: str, removed: bool
    ) -> OffloadingEvent: ...
    @property
    def block_hashes(self) -> list[_BlockHash]:
        """The hashes concerned, in the order the manager handled them."""
    @property
    def block_size(self) -> int:
        """Tokens per block (the manager's ``block_size``)."""
    @property
    def medium(self) -> str:
        """``"CPU"``."""
    @property
    def removed(self) -> bool:
        """True for evictions, False for blocks whose store completed."""
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __reduce__(
        self,
    ) -> tuple[type[OffloadingEvent], tuple[list[_BlockHash], int, str, bool]]: ...

@final
class OffloadingManager:
    """The CPU-tier block manager: which block hashes live in the CPU tier, where, in what state.

    ``num_blocks`` CPU blocks of ``block_size`` tokens; ``policy`` is ``"lru"`` or ``"arc"``.
    Hashes are ``bytes`` (any length) or ``int`` (within 128-bit signed range); ``5`` and
    ``b"\\x05"`` are different hashes. Every call checks its whole argument first: a bad call
    raises a :class:`kvoff.KvoffError` subclass and changes nothing. Block ids are handed out
    fresh first (0, 1, 2, ...), then freed ids last-in-first-out. Calls naming 256 hashes or more
    release the GIL while the Rust core works; concurrent calls are serialized.
    """

    def __new__(
        cls,
        num_blocks: int,
        block_size: int = 16,
        policy: str = "lru",
        enable_events: bool = False,
    ) -> OffloadingManager: ...
    def lookup(self, block_hashes: _BlockHashes) -> int:
        """Length of the longest run of present and ready blocks from the first hash."""
    def prepare_load(self, block_hashes: _BlockHashes) -> LoadStoreSpec:
        """Pin the blocks for a load (state +1) until :meth:`complete_load`.

        Raises UnknownHashError for a hash not present, InvalidStateError for a block whose
        store is in flight, InvalidArgumentError for a hash named twice.
        """
    def touch(self, block_hashes: _BlockHashes) -> None:
        """Recency update, last hash first (a prefix's first block ends most recent).

        Hashes not present are skipped; under ARC a remembered (ghost) hash adapts the target.
        """
    def complete_load(self, block_hashes: _BlockHashes) -> None:
        """Unpin blocks pinned by :meth:`prepare_load` (InvalidStateError if none in flight)."""
    def prepare_store(self, block_hashes: _BlockHashes) -> PrepareStoreOutput | None:
        """Allocate blocks for the hashes not yet present (their state becomes -1).

        Evicts unpinned ready blocks as needed, never one named in this call. Returns None, and
        evicts nothing, when there is not enough room (counted in ``allocation_failures``).
        """
    def complete_store(self, block_hashes: _BlockHashes, success: bool = True) -> None:
        """Finish stores. On success blocks in flight become ready (state 0); on failure they
        are freed. Blocks already ready are left alone. UnknownHashError for a hash not present.
        """
    def take_events(self) -> list[OffloadingEvent]:
        """Events since the last call; always empty unless ``enable_events=True``."""
    def block_state(self, block_hash: _BlockHash) -> int:
        """-1 store in flight, 0 evictable, n > 0 with n loads in flight (UnknownHashError if
        absent)."""
    def block_id(self, block_hash: _BlockHash) -> int:
        """The CPU block id holding ``block_hash`` (UnknownHashError if absent)."""
    def policy_state(self) -> dict[str, Any]:
        """The policy's lists, least recent first: ``{"lru": [...]}``, or ``{"t1", "t2", "b1",
        "b2": [...], "target": int}`` for ARC (b1/b2 are the ghost lists)."""
    def __contains__(self, key: _BlockHash, /) -> bool: ...
    def __len__(self) -> int:
        """Resident blocks."""
    @property
    def capacity(self) -> int:
        """Total CPU blocks (``num_blocks``)."""
    @property
    def free(self) -> int:
        """Blocks not allocated (``capacity - resident``)."""
    @property
    def resident(self) -> int:
        """Allocated blocks, in any state."""
    @property
    def pinned(self) -> int:
        """Blocks with a store or a load in flight."""
    @property
    def block_size(self) -> int:
        """Tokens per block."""
    @property
    def policy(self) -> str:
        """``"lru"`` or ``"arc"``."""
    @property
    def blocks_queried(self) -> int:
        """Hashes passed to :meth:`lookup`, in total."""
    @property
    def blocks_hit(self) -> int:
        """Hashes :meth:`lookup` found (the ready prefixes), in total."""
    @property
    def blocks_stored(self) -> int:
        """Blocks allocated by :meth:`prepare_store`, in total."""
    @property
    def blocks_evicted(self) -> int:
        """Blocks evicted to make room, in total."""
    @property
    def allocation_failures(self) -> int:
        """:meth:`prepare_store` calls that returned None."""

# --- stats section (StatsAccumulator, OffloadingConnectorStats) ---

# --- jobs section (JobTracker) ---
