"""The job planner: exact pieces and DMA runs (adjacent CPU slots merge; runs break at pieces
and at allocation chunk edges)."""

from __future__ import annotations

import numpy as np
import pytest

from kvoff.errors import InvalidArgumentError
from kvoff.transfer.plan import as_block_ids, piece_sizes, plan_job


def _plan(
    store: bool, gpu: list[int], cpu: list[int], spc: int, spp: int = 3, edge: int | None = None
) -> list[tuple[int, int, list[tuple[int, int, int, int]]]]:
    p = plan_job(
        store=store,
        gpu_ids=np.asarray(gpu, dtype=np.int64),
        cpu_ids=np.asarray(cpu, dtype=np.int64),
        ratio=2,
        slot_bytes=100,
        slots_per_piece=spp,
        slots_per_chunk=spc,
        edge_piece=edge,
    )
    assert p.nbytes == 100 * len(gpu)
    return [(pc.first, pc.count, pc.runs) for pc in p.pieces]


def test_adjacent_cpu_blocks_merge_into_one_run_per_piece() -> None:
    assert _plan(True, list(range(10, 18)), [5, 6, 7, 2], spc=100) == [
        (0, 2, [(0, 0, 1000, 200)]),
        (2, 3, [(0, 0, 1200, 300)]),
        (5, 3, [(0, 0, 1500, 100), (100, 0, 400, 200)]),
    ]
    assert _plan(True, list(range(8)), [5, 6, 7, 2], spc=100, spp=8) == [
        (0, 8, [(0, 0, 1000, 600), (600, 0, 400, 200)]),
    ]


def test_runs_break_at_chunk_edges() -> None:
    # 12 slots per chunk: CPU blocks 0..5 in chunk 0, 6..11 in chunk 1.
    assert _plan(True, list(range(10, 18)), [5, 6, 7, 2], spc=12) == [
        (0, 2, [(0, 0, 1000, 200)]),
        (2, 3, [(0, 1, 0, 300)]),
        (5, 3, [(0, 1, 300, 100), (100, 0, 400, 200)]),
    ]


def test_consecutive_cpu_blocks_make_one_run_per_piece_split_at_chunk_edges() -> None:
    # CPU blocks 4..7 are slots 8..15; chunk 0 ends after slot 11.
    assert _plan(True, list(range(8)), [4, 5, 6, 7], spc=12) == [
        (0, 2, [(0, 0, 800, 200)]),
        (2, 3, [(0, 0, 1000, 200), (200, 1, 0, 100)]),
        (5, 3, [(0, 1, 100, 300)]),
    ]
    assert _plan(False, list(range(7)), [4, 5, 6, 7], spc=12) == [
        (0, 3, [(0, 0, 900, 300)]),
        (3, 3, [(0, 1, 0, 300)]),
        (6, 1, [(0, 1, 300, 100)]),
    ]


def test_load_skips_the_head_of_the_first_cpu_block() -> None:
    assert _plan(False, [9, 3, 4], [5, 6], spc=100) == [(0, 3, [(0, 0, 1100, 300)])]
    # Loads end with the short piece.
    assert _plan(False, [9, 3, 4, 1], [5, 6], spc=100) == [
        (0, 3, [(0, 0, 1000, 300)]),
        (3, 1, [(0, 0, 1300, 100)]),
    ]


def test_the_exposed_piece_is_the_small_one() -> None:
    # A store's first gather and a load's last scatter cannot overlap anything.
    gpu, cpu = list(range(6)), [1, 2, 3]
    assert _plan(True, gpu, cpu, spc=100, edge=1) == [
        (0, 1, [(0, 0, 200, 100)]),
        (1, 2, [(0, 0, 300, 200)]),
        (3, 3, [(0, 0, 500, 300)]),
    ]
    assert _plan(False, gpu, cpu, spc=100, edge=1) == [
        (0, 3, [(0, 0, 200, 300)]),
        (3, 2, [(0, 0, 500, 200)]),
        (5, 1, [(0, 0, 700, 100)]),
    ]


def test_piece_sizes_edge_piece_then_remainder_then_full_pieces() -> None:
    assert piece_sizes(8, 4, None) == [4, 4]
    assert piece_sizes(9, 4, None) == [1, 4, 4]  # the remainder first
    assert piece_sizes(8, 4, 1) == [1, 3, 4]
    assert piece_sizes(9, 4, 1) == [1, 4, 4]
    assert piece_sizes(3, 4, 1) == [1, 2]
    assert piece_sizes(1, 4, 1) == [1]  # no larger than the edge: one piece
    # 128 MiB of 2 MiB slots, 32 MiB buffers: a 4 MiB edge piece, then the rest.
    assert piece_sizes(64, 16, 2) == [2, 14, 16, 16, 16]


def test_empty_job_has_no_pieces() -> None:
    assert _plan(True, [], [], spc=100) == []
    assert _plan(False, [], [], spc=100) == []


def test_as_block_ids() -> None:
    assert as_block_ids("x", [3, 1], 4).tolist() == [3, 1]
    assert as_block_ids("x", np.array([], dtype=np.float64), 4).dtype == np.int64
    with pytest.raises(InvalidArgumentError, match=r"x holds 4, outside \[0, 4\)"):
        as_block_ids("x", [4], 4)
    with pytest.raises(InvalidArgumentError, match="x must hold integers, got dtype bool"):
        as_block_ids("x", [True], 4)
