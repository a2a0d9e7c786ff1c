"""Turning a job's block ids into staging pieces and DMA runs, checked before anything runs.

A job is a list of GPU blocks and the CPU-tier *slots* (GPU-block-sized places inside CPU
blocks) they map to, in order. The job is cut into pieces of at most ``slots_per_piece`` slots
(one staging buffer each). Inside a piece, slots that are consecutive in the CPU tier (and in the
same allocation chunk) form one *run*: one DMA between the staging buffer and the CPU tier.

The one kernel a pipeline cannot hide is the first gather of a store (nothing to overlap it
with yet) and the last scatter of a load, so a small *edge* piece (``edge_piece`` slots) sits
there; then the remainder, then full pieces (mirrored for a load).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from kvoff.errors import InvalidArgumentError

__all__ = ["Piece", "Plan", "as_block_ids", "piece_sizes", "plan_job"]

IdArray = npt.NDArray[np.int64]


def as_block_ids(name: str, ids: object, limit: int) -> IdArray:
    """``ids`` as a 1-D int64 array with every id in ``[0, limit)``."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{name} must hold integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= limit:
        bad = lo if lo < 0 else hi
        raise InvalidArgumentError(f"{name} holds {bad}, outside [0, {limit})")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_unique(name: str, ids: IdArray) -> None:
    if ids.size > 1:
        s = np.sort(ids)
        dup = s[1:][s[1:] == s[:-1]]
        if dup.size:
            raise InvalidArgumentError(f"{name} repeats block {int(dup[0])}: a destination twice")


class Piece(NamedTuple):
    """One staging buffer's worth: GPU ids ``[first, first + count)`` of the job, and its DMAs.
    (Tuples: a job builds several on the issuing thread, and a frozen dataclass costs a few
    times more to build.)"""

    first: int
    count: int
    # (staging byte offset, chunk index, byte offset in chunk, bytes) per DMA
    runs: list[tuple[int, int, int, int]]


class Plan(NamedTuple):
    gpu_ids: IdArray
    pieces: list[Piece]
    nbytes: int


def piece_sizes(n: int, per_piece: int, edge: int | None) -> list[int]:
    """Slots per piece, exposed end first: an edge piece of ``edge`` slots (when the job is
    larger), the remainder, then full pieces."""
    head: list[int] = []
    if edge is not None and edge < n:
        head, n = [edge], n - edge
    k = -(-n // per_piece)
    return [*head, n - (k - 1) * per_piece, *[per_piece] * (k - 1)]


def _consecutive_pieces(
    first_slot: int, sizes: list[int], slot_bytes: int, slots_per_chunk: int
) -> list[Piece]:
    """Pieces over the CPU slots ``first_slot, first_slot + 1, ...``: one run per piece, split
    where it crosses a chunk edge."""
    pieces = []
    job_slot = 0
    for size in sizes:
        runs = []
        at, end = first_slot + job_slot, first_slot + job_slot + size
        while at < end:
            chunk, in_chunk = divmod(at, slots_per_chunk)
            stop = min(end, (chunk + 1) * slots_per_chunk)
            runs.append(
                (
                    (at - first_slot - job_slot) * slot_bytes,
                    chunk,
                    in_chunk * slot_bytes,
                    (stop - at) * slot_bytes,
                )
            )
            at = stop
        pieces.append(Piece(first=job_slot, count=size, runs=runs))
        job_slot += size
    return pieces


def plan_job(
    *,
    store: bool,
    gpu_ids: IdArray,
    cpu_ids: IdArray,
    ratio: int,
    slot_bytes: int,
    slots_per_piece: int,
    slots_per_chunk: int,
    edge_piece: int | None = None,
) -> Plan:
    """Check that the ids fit together and cut the job into pieces and runs.

    A store fills whole CPU blocks (``len(gpu) == len(cpu) * ratio``); a load fills the tail of
    its CPU blocks, skipping up to ``ratio - 1`` GPU-block slots at the start of the first one
    (what the GPU prefix cache already holds).
    """
    n, m = gpu_ids.size, cpu_ids.size
    full = m * ratio
    # Consecutive CPU blocks (the usual case) cannot repeat, and their runs break only at
    # pieces and chunk edges.
    consecutive = m <= 1 or bool((cpu_ids[1:] - cpu_ids[:-1] == 1).all())
    if store:
        if n != full:
            raise InvalidArgumentError(
                f"a store of {m} CPU block(s) of {ratio} GPU block(s) each needs {full} GPU "
                f"block ids, got {n}"
            )
        if not consecutive:
            _check_unique("cpu_block_ids", cpu_ids)
    else:
        if not (full - ratio < n <= full or n == m == 0):
            raise InvalidArgumentError(
                f"a load of {m} CPU block(s) of {ratio} GPU block(s) each needs "
                f"{max(full - ratio + 1, 0)}..{full} GPU block ids, got {n}"
            )
        _check_unique("gpu_block_ids", gpu_ids)
    skip = full - n
    if n == 0:
        return Plan(gpu_ids=gpu_ids, pieces=[], nbytes=0)
    sizes = piece_sizes(n, slots_per_piece, edge_piece)
    if not store:  # a store starts with the short piece, a load ends with it
        sizes.reverse()
    if consecutive:
        first_slot = int(cpu_ids[0]) * ratio + skip
        return Plan(
            gpu_ids,
            _consecutive_pieces(first_slot, sizes, slot_bytes, slots_per_chunk),
            n * slot_bytes,
        )
    slots = (cpu_ids[:, None] * ratio + np.arange(ratio, dtype=np.int64)).ravel()[skip:]
    # A run breaks where the CPU slots stop being consecutive, at a chunk edge, or at a piece.
    breaks = np.ones(n, dtype=bool)
    breaks[1:] = (slots[1:] != slots[:-1] + 1) | (
        slots[1:] // slots_per_chunk != slots[:-1] // slots_per_chunk
    )
    firsts = [0]
    for size in sizes[:-1]:
        firsts.append(firsts[-1] + size)
    piece_first = np.asarray(firsts, dtype=np.int64)
    breaks[piece_first] = True
    starts = np.flatnonzero(breaks)
    lengths = np.diff(np.append(starts, n))
    run_piece_arr = np.searchsorted(piece_first, starts, side="right") - 1
    run_piece = run_piece_arr.tolist()
    stage_off = ((starts - piece_first[run_piece_arr]) * slot_bytes).tolist()
    chunk, in_chunk = np.divmod(slots[starts], slots_per_chunk)
    chunk_l = chunk.tolist()
    chunk_off = (in_chunk * slot_bytes).tolist()
    nbytes_l = (lengths * slot_bytes).tolist()

    ends = [*firsts[1:], n]
    pieces = [Piece(first=a, count=b - a, runs=[]) for a, b in zip(firsts, ends, strict=True)]
    for p, so, c, co, nb in zip(run_piece, stage_off, chunk_l, chunk_off, nbytes_l, strict=True):
        pieces[p].runs.append((so, c, co, nb))
    return Plan(gpu_ids=gpu_ids, pieces=pieces, nbytes=n * slot_bytes)
