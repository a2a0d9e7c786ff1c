"""Type stubs for the extension module ``kvoff._core`` (hand-written; checked by mypy.stubtest)."""

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final, TypeAlias, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "Direction",
    "DirectionStats",
    "JobTracker",
    "LoadStoreSpec",
    "OffloadingConnectorStats",
    "OffloadingEvent",
    "OffloadingManager",
    "PrepareStoreOutput",
    "StatsAccumulator",
    "VllmOffloadingManager",
    "VllmRequestState",
    "__version__",
]

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
    A tier whose index and per-block state (about 180 to 330 bytes a block, and about 150 more
    for ARC's ghost lists) would not fit in the machine's physical memory raises MemoryError,
    naming both sizes, as does an allocation the system refuses; nothing is left behind.
    Hashes are ``bytes`` (any length) or ``int`` (within 128-bit signed range), or the batched
    form, a 1-D native-endian ``int64``/``uint64`` numpy array; ``5`` and
    ``b"\\x05"`` are different hashes. Every call checks its whole argument first: a bad call
    raises a :class:`kvoff.KvoffError` subclass and changes nothing. Block ids are handed out
    fresh first (0, 1, 2, ...), then freed ids last-in-first-out. Calls naming 1024 hashes or
    more release the GIL while the Rust core works (the call has its own copy of the hashes by
    then); shorter calls are cheaper done under it. Concurrent calls are serialized.

    With ``stats``, every successful call also reports into that accumulator (lookups and hits
    in blocks and tokens, blocks stored, evictions, allocation failures, occupancy gauges), so
    one snapshot describes the interval for the scheduler and the workers alike.
    """

    def __new__(
        cls,
        num_blocks: int,
        block_size: int = 16,
        policy: str = "lru",
        enable_events: bool = False,
        stats: StatsAccumulator | None = None,
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
        ``block_hashes_to_store`` holds the caller's own hash objects (an array of the input's
        dtype for the batched form); ``block_hashes_evicted`` new ``bytes``/``int`` objects
        equal to the hashes once stored (the manager keeps no reference to the caller's).
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

# --- stats section (Direction, StatsAccumulator, OffloadingConnectorStats) ---

@final
class Direction:
    """The transfer direction names, defined once in the core: ``str`` constants (dict keys of
    a snapshot, the ``direction`` label, vLLM's ``transfer_type``). Not instantiable. Every
    method that takes a direction accepts exactly these strings."""

    GPU_TO_CPU: Final = "GPU_to_CPU"
    """A store: GPU KV blocks copied into the CPU tier."""
    CPU_TO_GPU: Final = "CPU_to_GPU"
    """A load: CPU-tier blocks copied back into GPU KV blocks."""
    CPU_TO_REMOTE: Final = "CPU_to_REMOTE"
    """A write-behind: CPU-tier blocks written to the remote tier."""
    REMOTE_TO_CPU: Final = "REMOTE_to_CPU"
    """A fetch: remote-tier blocks read into CPU-tier blocks."""
    GPU: Final[tuple[str, str]]
    """The GPU link's directions (CpuGpuTransfer, JobTracker, vLLM's ``transfer_type``)."""
    REMOTE: Final[tuple[str, str]]
    """The remote tier's directions."""
    ALL: Final[tuple[str, ...]]
    """Every direction, in the order snapshots list them."""

@final
class StatsAccumulator:
    """Records transfers, lookups and block-manager counters from any number of threads with
    atomic operations only (no lock, no allocation per record). ``take()`` hands out one interval
    as an :class:`OffloadingConnectorStats` and starts the next; a record racing with ``take()``
    lands whole in exactly one snapshot. Cannot be pickled (it is live shared state).

    Counts are ints (or ``__index__`` objects such as numpy integers) in ``0..=2^64-1``, never
    ``bool``; anything else is an InvalidArgumentError naming the argument. A counter that would
    pass ``2^64 - 1`` within one interval stays at ``2^64 - 1`` (saturates); it never wraps."""

    def __new__(cls) -> StatsAccumulator: ...
    def record_transfer(
        self,
        direction: str,
        num_bytes: int,
        seconds: float,
        success: bool = True,
        num_blocks: int = 0,
    ) -> None:
        """Record one finished transfer. ``direction`` is one of :attr:`Direction.ALL` (exactly;
        the old ``"store"`` / ``"load"`` aliases are refused); ``seconds`` (an int or float, not
        a bool) must be finite and in ``[0, 86400]`` (one day; it is kept in whole nanoseconds),
        ``num_bytes`` at most ``2^50`` (1 PiB): one transfer beyond either is a caller bug.
        ``success`` must be a bool. A failure counts only in ``failed_ops`` / ``failed_bytes``.
        Raises InvalidArgumentError naming the argument (and nothing is recorded) otherwise."""

    def record_lookup(
        self, blocks_queried: int, blocks_hit: int, tokens_queried: int, tokens_hit: int
    ) -> None:
        """Record one lookup. Hits may not exceed queries (InvalidArgumentError)."""

    def record_stored(self, num_blocks: int) -> None:
        """Count blocks newly allocated for stores (what the manager reports)."""

    def record_evicted(self, num_blocks: int) -> None:
        """Count blocks evicted to make room."""

    def record_allocation_failure(self) -> None:
        """Count one store that could not get room."""

    def record_hits(
        self, cpu_blocks: int, cpu_tokens: int, remote_blocks: int = 0, remote_tokens: int = 0
    ) -> None:
        """Record one request's hit as the connector reported it to the engine, split by the
        tier that served it: blocks (and their tokens) already in the CPU tier, and those the
        remote tier supplied (fetched into the CPU tier for this request). One call per reported
        hit, so the split lands in one snapshot."""

    def record_remote_lookup(self, blocks_queried: int, blocks_hit: int) -> None:
        """Record one answered remote-tier lookup: blocks asked about, blocks found (the leading
        run). Hits may not exceed queries (InvalidArgumentError, nothing recorded)."""

    def record_remote_error(self, kind: str, n: int = 1) -> None:
        """Count ``n`` remote-tier errors of ``kind``, one of
        :attr:`OffloadingConnectorStats.REMOTE_ERROR_KINDS` (InvalidArgumentError otherwise)."""

    def record_writes_dropped(self, n: int) -> None:
        """Count ``n`` pending writes pushed out of the full write-behind queue."""

    def set_write_queue(self, blocks: int) -> None:
        """Set the write-behind queue depth gauge, in blocks (latest value; ``take()`` does not
        reset it)."""

    def set_occupancy(self, capacity: int, resident: int, pinned: int) -> None:
        """Set the occupancy gauges (latest values; ``take()`` does not reset them). They must
        nest, ``pinned <= resident <= capacity`` (InvalidArgumentError, gauges unchanged)."""

    def take(self) -> OffloadingConnectorStats:
        """Everything recorded since the previous ``take()``, plus the current gauges."""

@final
class OffloadingConnectorStats:
    """One interval's statistics as plain data of constant size (format version 2, see
    docs/ARCHITECTURE.md; version-1 dicts and bytes are read too, their remote-tier parts zero).
    Pickles as fixed-length bytes; compares by value; unhashable."""

    def __new__(
        cls, data: dict[str, Any] | bytes | bytearray | memoryview | None = None
    ) -> OffloadingConnectorStats:
        """Empty, or from a ``to_dict()`` dict or the ``to_bytes()`` form as bytes, bytearray or
        memoryview (validated); anything else is an InvalidArgumentError."""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> OffloadingConnectorStats:
        """Validate and load a ``to_dict()`` dict. Raises InvalidArgumentError naming the key at
        fault: wrong version, missing or unknown keys, wrong types, negative or oversized counts,
        wrong bucket layout. Each count is checked alone (an int in ``0..=2^64-1``); every method
        is defined for any such values, sums wider than 64 bits included."""

    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> OffloadingConnectorStats:
        """Load the ``to_bytes()`` form (InvalidArgumentError on a bad header, version or size,
        or an argument that is not bytes-like)."""

    def to_dict(self) -> dict[str, Any]:
        """The plain-data layout (version, buckets, transfers, lookups, manager, hits, remote)."""

    @property
    def data(self) -> dict[str, Any]:
        """``to_dict()``; a fresh dict each time (editing it does not change the stats)."""

    def to_bytes(self) -> bytes:
        """Fixed-length binary form: b"KVOS", version (u32 LE), every counter (u64 LE)."""

    def reduce(self) -> dict[str, int | float]:
        """Summary: per direction (``GPU_to_CPU_``, ``CPU_to_GPU_``, ``CPU_to_REMOTE_``,
        ``REMOTE_to_CPU_`` prefix) ``total_bytes``, ``total_time`` (s), ``ops``, ``failed_ops``,
        ``failed_bytes``, ``blocks``, ``avg_bytes``, ``avg_time`` (s), ``avg_throughput`` (mean
        of per-transfer B/s), ``throughput`` (total bytes / total time); then
        ``blocks_queried``, ``blocks_hit``, ``hit_rate``, ``tokens_queried``, ``tokens_hit``,
        ``token_hit_rate``, ``blocks_stored``, ``blocks_evicted``, ``allocation_failures``,
        ``capacity_blocks``, ``resident_blocks``, ``pinned_blocks``; then ``cpu_hit_blocks``,
        ``cpu_hit_tokens``, ``remote_hit_blocks``, ``remote_hit_tokens``,
        ``remote_lookup_blocks_queried``, ``remote_lookup_blocks_hit``,
        ``remote_lookup_hit_rate``, ``remote_errors_<kind>`` for each of
        :attr:`REMOTE_ERROR_KINDS`, ``remote_writes_dropped``, ``remote_write_queue_blocks``.
        Averages of nothing are 0.0; every float is finite, whatever the counts."""

    def aggregate(self, other: OffloadingConnectorStats) -> OffloadingConnectorStats:
        """Add ``other`` into this snapshot (counters and gauges alike) and return this snapshot.
        On u64 overflow raises InvalidArgumentError and changes nothing."""

    def accumulate(self, other: OffloadingConnectorStats) -> OffloadingConnectorStats:
        """Add the interval ``other`` into this snapshot read as cumulative totals, and return
        this snapshot: counters add, saturating at ``2^64 - 1`` (never raises), and the gauges
        take ``other``'s values (the exporter keeps one such total per engine)."""

    def direction(self, name: str) -> DirectionStats:
        """One direction's counters (InvalidArgumentError for an unknown direction)."""

    @staticmethod
    def buckets() -> dict[str, tuple[float, ...]]:
        """The bucket bounds (``size_bytes``, ``duration_seconds``,
        ``throughput_bytes_per_second``), as ``to_dict()["buckets"]`` carries them; a fresh dict
        each call."""

    VERSION: ClassVar[int]
    """The format version ``to_dict()`` and ``to_bytes()`` write (2; version 1 is read too)."""
    REMOTE_ERROR_KINDS: ClassVar[tuple[str, ...]]
    """The remote tier's error kinds, in the order ``to_dict()["remote"]["errors"]`` has them."""
    TIERS: ClassVar[tuple[str, ...]]
    """The tiers a hit is attributed to: ``("cpu", "remote")``."""

    def is_empty(self) -> bool:
        """True when every counter and gauge is zero."""

    def reset(self) -> None:
        """Zero everything."""

    def clone_and_reset(self) -> OffloadingConnectorStats:
        """A copy of this snapshot; this one is reset."""

    def __copy__(self) -> OffloadingConnectorStats: ...
    def __deepcopy__(self, memo: Any) -> OffloadingConnectorStats: ...
    def __reduce__(self) -> tuple[type[OffloadingConnectorStats], tuple[bytes]]: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class DirectionStats:
    """One direction of one snapshot (``OffloadingConnectorStats.direction(name)``), frozen.
    Histogram counts are non-cumulative, one per bound plus ``+Inf``; byte, time and histogram
    counts cover successful transfers only."""

    @property
    def direction(self) -> str: ...
    @property
    def ops(self) -> int: ...
    @property
    def failed_ops(self) -> int: ...
    @property
    def blocks(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def failed_bytes(self) -> int: ...
    @property
    def time_ns(self) -> int: ...
    @property
    def size_counts(self) -> tuple[int, ...]: ...
    @property
    def duration_counts(self) -> tuple[int, ...]: ...
    @property
    def throughput_counts(self) -> tuple[int, ...]: ...
    @property
    def throughput_sum(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

# --- jobs section (JobTracker) ---

@final
class JobTracker:
    """Job ids and completion bookkeeping for one worker (semantics as vLLM's offloading worker
    answers ``get_finished``). A request finishes loading when its last pending load job
    completes; it finishes storing once ``request_finished`` was called and it has no pending
    store job (at once if it has none). Failed jobs are done too. Errors change nothing."""

    def __new__(cls, stats: StatsAccumulator | None = None) -> JobTracker:
        """Completed jobs are recorded into ``stats`` when given."""

    @property
    def stats(self) -> StatsAccumulator | None:
        """The accumulator completed jobs are recorded into, if any."""

    def submit(self, req_id: str, direction: str, num_blocks: int, num_bytes: int) -> int:
        """Register a transfer and return its job id (counting up from 0). InvalidArgumentError
        for an unknown direction, a size that is not an int in range (``num_bytes`` at most
        ``2^50``, bools refused) or a ``req_id`` that is not valid Unicode, InvalidStateError
        for a request already marked finished."""

    def complete(self, job_id: int, success: bool, seconds: float) -> str:
        """Complete a job, record it into the stats, and return its request id.
        UnknownJobError for an unknown or already completed job, InvalidArgumentError for a
        ``success`` that is not a bool or a ``seconds`` that is not a finite number in
        ``[0, 86400]``."""

    def request_finished(self, req_id: str) -> None:
        """The engine finished ``req_id``. InvalidStateError if it is already marked."""

    def take_finished(self) -> tuple[list[str], list[str]]:
        """``(finished_storing, finished_loading)`` since the previous call, in finishing order."""

    def pending_jobs(self, req_id: str) -> list[int]:
        """Job ids still pending for ``req_id``, ascending (empty if none)."""

    @property
    def num_pending(self) -> int:
        """Jobs submitted and not yet completed."""

@final
class VllmRequestState:
    """One request's record for ``VllmOffloadingManager``, kept in vLLM's ``ReqContext``."""

@final
class VllmOffloadingManager:
    """vLLM 0.33's ``OffloadingManager`` contract in Rust (``kvoff.vllm.manager`` wraps it).

    The vLLM value classes it returns are handed in at construction, so the extension never
    imports vLLM; ``ctx`` is vLLM's ``ReqContext``.
    """

    def __new__(
        cls,
        num_chunks: int,
        policy: str,
        enable_events: bool,
        store_threshold: int,
        max_tracker_size: int,
        lookup_results: tuple[object, object, object],
        load_store_spec: object,
        prepare_store_output: object,
        offloading_event: object,
        medium: object,
        req_context: object,
    ) -> VllmOffloadingManager:
        """``req_context`` is vLLM's ``ReqContext`` class: a context of exactly that class has
        its key positions read from its dict rather than through a method call per key."""
    @property
    def num_chunks(self) -> int: ...
    @property
    def store_threshold(self) -> int: ...
    @property
    def arc_target(self) -> float | None: ...
    @property
    def pinned(self) -> int:
        """Chunks pinned by loads or stores in flight."""

    @property
    def policy(self) -> str: ...
    def take_counters(self) -> tuple[int, int, int, int, int]:
        """``(lookups, lookup_hits, stored, evicted, allocation_failures)`` since the last call."""

    def __len__(self) -> int: ...
    def __contains__(self, key: bytes, /) -> bool: ...
    def on_new_request(self, ctx: Any) -> None: ...
    def lookup(self, key: bytes, ctx: Any = None) -> Any:
        """``MISS`` / ``HIT`` / ``HIT_PENDING``, as the ``lookup_results`` given."""

    def prepare_load(self, keys: Iterable[bytes], ctx: Any) -> Any: ...
    def touch(self, keys: Iterable[bytes], ctx: Any = None) -> None: ...
    def complete_load(self, keys: Iterable[bytes], ctx: Any = None) -> None: ...
    def prepare_store(self, keys: Iterable[bytes], ctx: Any) -> Any | None:
        """vLLM's ``PrepareStoreOutput``, or ``None`` when the keys cannot fit."""

    def complete_store(
        self, keys: Iterable[bytes], ctx: Any = None, success: bool = True
    ) -> None: ...
    def on_request_finished(self, ctx: Any) -> None: ...
    def reset_cache(self) -> None: ...
    def take_events(self) -> list[Any]:
        """The events since the last call, as vLLM's ``OffloadingEvent``s."""

    def take_usage(self) -> tuple[int, int, int, list[int], int]:
        """``(capacity, in_use, write_pending, allocation_sizes, stores_skipped)``."""
