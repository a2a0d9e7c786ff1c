"""Type stubs for the extension module ``kvoff._core`` (hand-written; checked by mypy.stubtest)."""

from typing import Any, ClassVar, final

__version__: str

# --- manager section (OffloadingManager, LoadStoreSpec, PrepareStoreOutput, OffloadingEvent) ---

# --- stats section (StatsAccumulator, OffloadingConnectorStats) ---

@final
class StatsAccumulator:
    """Records transfers, lookups and block-manager counters from any number of threads with
    atomic operations only (no lock, no allocation per record). ``take()`` hands out one interval
    as an :class:`OffloadingConnectorStats` and starts the next; a record racing with ``take()``
    lands whole in exactly one snapshot. Cannot be pickled (it is live shared state)."""

    def __new__(cls) -> StatsAccumulator: ...
    def record_transfer(
        self,
        direction: str,
        num_bytes: int,
        seconds: float,
        success: bool = True,
        num_blocks: int = 0,
    ) -> None:
        """Record one finished transfer. ``direction`` is ``"GPU_to_CPU"`` (or ``"store"``) or
        ``"CPU_to_GPU"`` (or ``"load"``); ``seconds`` must be finite and >= 0 (it is kept in whole
        nanoseconds). A failure counts only in ``failed_ops`` / ``failed_bytes``.
        Raises InvalidArgumentError for an unknown direction, a negative size or a bad time."""

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

    def set_occupancy(self, capacity: int, resident: int, pinned: int) -> None:
        """Set the occupancy gauges (latest values; ``take()`` does not reset them)."""

    def take(self) -> OffloadingConnectorStats:
        """Everything recorded since the previous ``take()``, plus the current gauges."""

@final
class OffloadingConnectorStats:
    """One interval's statistics as plain data of constant size (format version 1, see
    docs/ARCHITECTURE.md). Pickles as fixed-length bytes; compares by value; unhashable."""

    def __new__(cls, data: dict[str, Any] | bytes | None = None) -> OffloadingConnectorStats:
        """Empty, or from a ``to_dict()`` dict or ``to_bytes()`` bytes (validated)."""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> OffloadingConnectorStats:
        """Validate and load a ``to_dict()`` dict. Raises InvalidArgumentError naming the key at
        fault: wrong version, missing or unknown keys, wrong types, negative or oversized counts,
        wrong bucket layout."""

    @staticmethod
    def from_bytes(data: bytes) -> OffloadingConnectorStats:
        """Load the ``to_bytes()`` form (InvalidArgumentError on a bad header, version or size)."""

    def to_dict(self) -> dict[str, Any]:
        """The plain-data layout (version, buckets, transfers, lookups, manager)."""

    @property
    def data(self) -> dict[str, Any]:
        """``to_dict()``; a fresh dict each time (editing it does not change the stats)."""

    def to_bytes(self) -> bytes:
        """Fixed-length binary form: b"KVOS", version (u32 LE), every counter (u64 LE)."""

    def reduce(self) -> dict[str, int | float]:
        """Summary: per direction (``GPU_to_CPU_``/``CPU_to_GPU_`` prefix) ``total_bytes``,
        ``total_time`` (s), ``ops``, ``failed_ops``, ``failed_bytes``, ``blocks``, ``avg_bytes``,
        ``avg_time`` (s), ``avg_throughput`` (mean of per-transfer B/s), ``throughput``
        (total bytes / total time); then ``blocks_queried``, ``blocks_hit``, ``hit_rate``,
        ``tokens_queried``, ``tokens_hit``, ``token_hit_rate``, ``blocks_stored``,
        ``blocks_evicted``, ``allocation_failures``, ``capacity_blocks``, ``resident_blocks``,
        ``pinned_blocks``. Averages of nothing are 0.0."""

    def aggregate(self, other: OffloadingConnectorStats) -> OffloadingConnectorStats:
        """Add ``other`` into this snapshot (counters and gauges alike) and return this snapshot.
        On u64 overflow raises InvalidArgumentError and changes nothing."""

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
        for an unknown direction or a negative size, InvalidStateError for a request already
        marked finished."""

    def complete(self, job_id: int, success: bool, seconds: float) -> str:
        """Complete a job, record it into the stats, and return its request id.
        UnknownJobError for an unknown or already completed job, InvalidArgumentError for a
        non-finite or negative ``seconds``."""

    def request_finished(self, req_id: str) -> None:
        """The engine finished ``req_id``. InvalidStateError if it is already marked."""

    def take_finished(self) -> tuple[list[str], list[str]]:
        """``(finished_storing, finished_loading)`` since the previous call, in finishing order."""

    def pending_jobs(self, req_id: str) -> list[int]:
        """Job ids still pending for ``req_id``, ascending (empty if none)."""

    @property
    def num_pending(self) -> int:
        """Jobs submitted and not yet completed."""
