"""Gather GPU blocks into a staging buffer and scatter them back: one launch per piece.

The Triton kernel reads each region's base address, row stride, row length and offset inside a
slot from four small device tensors, so one launch moves every layer of every block in a piece,
whatever the layer count. Program ``(i * R + r, t)`` copies tiles ``t, t + T, ...`` of region
``r``'s row for the piece's ``i``-th block. Everything is in units of the layout's element width
(8 bytes when addresses and sizes allow), never in the model's dtype.

Without Triton (or on CPU tensors) ``TorchCopier`` does the same with one indexed copy per
region: per layer, never per block. ``TRITON_INTERPRET=1`` runs the Triton kernel on CPU
tensors, which is how CI checks its indexing without a GPU.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch

from kvoff.transfer.layout import KvLayout

__all__ = ["HAS_TRITON", "Copier", "TorchCopier", "TritonCopier", "triton_usable"]

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    HAS_TRITON = False

_INT_OF_WIDTH = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}
_MAX_TILE = 1024  # elements per program step: 8 KiB at 8-byte width
_MAX_TILES_PER_ROW = 256  # programs per row; longer rows loop, keeping the grid bounded


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton kernel can run on tensors of ``device``."""
    if not HAS_TRITON:
        return False
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class Copier(Protocol):
    #: Whether the ids must be in device memory (else a pinned host tensor is read in place).
    needs_device_ids: bool

    def gather(self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor) -> None:
        """Copy the slots of blocks ``ids[first : first + count]`` into ``staging`` (uint8),
        the ``i``-th of them at slot ``i``."""

    def scatter(self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor) -> None:
        """The inverse of :meth:`gather`."""


class TorchCopier:
    """One ``index_select`` / ``index_copy_`` per region."""

    needs_device_ids = True

    def __init__(self, layout: KvLayout) -> None:
        self._layout = layout

    def _views(self, staging: torch.Tensor, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        slots = staging[: n * self._layout.slot_bytes].view(n, self._layout.slot_bytes)
        return [
            (region, slots[:, off : off + size])
            for region, off, size in zip(
                self._layout.regions,
                self._layout.slot_offsets,
                self._layout.chunk_bytes,
                strict=True,
            )
        ]

    def gather(self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor) -> None:
        block_ids = ids[first : first + count]
        for region, dst in self._views(staging, count):
            if dst.is_contiguous():  # a single region: no temporary needed
                torch.index_select(region, 0, block_ids, out=dst)
            else:
                dst.copy_(region.index_select(0, block_ids))

    def scatter(self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor) -> None:
        block_ids = ids[first : first + count]
        for region, src in self._views(staging, count):
            region.index_copy_(0, block_ids, src)


if HAS_TRITON:
    # `first` changes with every piece: never specialize on it (one compiled kernel serves all).
    @triton.jit(do_not_specialize=["first"])  # type: ignore[untyped-decorator]
    def _copy_rows(  # type: ignore[no-untyped-def]
        region_ptrs,
        region_strides,
        region_lens,
        region_offsets,
        block_ids,
        first,
        staging,
        slot_len,
        num_regions,
        TILE: tl.constexpr,
        TO_STAGING: tl.constexpr,
        VEC: tl.constexpr,
        ALIGN: tl.constexpr,
    ):
        # VEC (elements) and ALIGN (bytes) promise what the host checked: every row start, row
        # length and slot offset is a multiple of them, so the accesses can be 16 bytes wide.
        row = tl.program_id(0)
        i = row // num_regions
        r = row % num_regions
        block = tl.load(block_ids + first + i)  # block_ids may be pinned host memory
        base = tl.load(region_ptrs + r).to(staging.dtype)
        gpu = tl.multiple_of(base + block * tl.load(region_strides + r), ALIGN)
        stage = staging + tl.multiple_of(
            i.to(tl.int64) * slot_len + tl.load(region_offsets + r), VEC
        )
        length = tl.multiple_of(tl.load(region_lens + r), VEC)
        lanes = tl.arange(0, TILE)
        start = tl.program_id(1).to(tl.int64) * TILE
        step = tl.num_programs(1).to(tl.int64) * TILE
        for t in range(start, length, step):
            idx = t + lanes
            mask = idx < length
            if TO_STAGING:
                tl.store(stage + idx, tl.load(gpu + idx, mask=mask), mask=mask)
            else:
                tl.store(gpu + idx, tl.load(stage + idx, mask=mask), mask=mask)


class TritonCopier:
    """One Triton launch per gather or scatter, whatever the number of layers."""

    needs_device_ids = False

    def __init__(self, layout: KvLayout) -> None:
        if not HAS_TRITON:  # pragma: no cover
            raise RuntimeError("triton is not importable")
        w = layout.element_bytes
        self._dtype = _INT_OF_WIDTH[w]
        self._slot_len = layout.slot_bytes // w
        self._num_regions = len(layout.regions)

        def table(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=layout.device)

        self._ptrs = table([r.data_ptr() for r in layout.regions])
        self._strides = table([r.stride(0) // w for r in layout.regions])
        self._lens = table([c // w for c in layout.chunk_bytes])
        self._offsets = table([o // w for o in layout.slot_offsets])
        longest = max(layout.chunk_bytes) // w
        self._tile = min(_MAX_TILE, max(16, 1 << (longest - 1).bit_length()))
        self._tiles = min(_MAX_TILES_PER_ROW, -(-longest // self._tile))
        sizes = [*layout.chunk_bytes, *layout.slot_offsets, layout.slot_bytes]
        sizes += [r.data_ptr() for r in layout.regions] + [r.stride(0) for r in layout.regions]
        wide = all(v % 16 == 0 for v in sizes)
        self._vec = 16 // w if wide else 1
        self._align = 16 if wide else w
        if layout.device.type == "cuda":
            # Compile now: a first-job compile would hold transfer_async for most of a second.
            ids = torch.zeros(2, dtype=torch.int64, pin_memory=True)
            staging = torch.empty(self._slot_len, dtype=self._dtype, device=layout.device)
            for to_staging in (True, False):
                _copy_rows.warmup(*self._args(ids, 1, staging), **self._meta(to_staging), grid=(1,))
            self.needs_device_ids = not self._reads_pinned_ids(layout, ids, staging)

    def _reads_pinned_ids(self, layout: KvLayout, ids: torch.Tensor, staging: torch.Tensor) -> bool:
        """Whether the kernel can read block ids from pinned host memory here (it can wherever
        unified addressing maps pinned memory, i.e. every 64-bit CUDA platform; checked, not
        assumed: a gather of block 0 through pinned ids must give block 0's bytes)."""
        try:
            self._launch(ids, 1, 1, staging, True)
            torch.cuda.synchronize(layout.device)
        except (ValueError, RuntimeError):
            return False
        want = torch.cat([r[0] for r in layout.regions])
        return bool(torch.equal(staging.view(torch.uint8), want))

    def _args(
        self, block_ids: torch.Tensor, first: int, staging: torch.Tensor
    ) -> tuple[object, ...]:
        return (
            self._ptrs,
            self._strides,
            self._lens,
            self._offsets,
            block_ids,
            first,
            staging,
            self._slot_len,
            self._num_regions,
        )

    def _meta(self, to_staging: bool) -> dict[str, object]:
        return {
            "TILE": self._tile,
            "TO_STAGING": to_staging,
            "VEC": self._vec,
            "ALIGN": self._align,
        }

    def _launch(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, to_staging: bool
    ) -> None:
        if count == 0:
            return
        grid = (count * self._num_regions, self._tiles)
        _copy_rows[grid](
            *self._args(ids, first, staging.view(self._dtype)), **self._meta(to_staging)
        )

    def gather(self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor) -> None:
        self._launch(ids, first, count, staging, True)

    def scatter(self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor) -> None:
        self._launch(ids, first, count, staging, False)
