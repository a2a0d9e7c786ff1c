"""Gather GPU blocks into a staging buffer and scatter them back: one launch per piece.

The Triton kernel reads each region's base address, row stride, row length and offset inside a
slot from four small device tensors, so one launch moves every layer of every block in a piece,
whatever the layer count. Rows (one block's row of one region) are spread over the grid's first
axis, tiles of a row over its second; ``max_programs`` caps the first axis, the programs then
looping over rows, so a copy running beside compute holds few SMs for longer instead of all of
them briefly. Everything is in units of the layout's element width (8 bytes when addresses and
sizes allow), never in the model's dtype. The block ids are in device memory (``first`` indexes
into a ring of them).

Launch cost: Triton's JIT dispatch (binding and specializing every argument, looking up the
kernel, resolving each pointer) costs tens of microseconds per launch from Python. The compiled
kernel is therefore called directly with pointers as integers, after checking at construction,
on a real launch, that this Triton's compiled kernels take their arguments as the JIT passes
them; where the check fails, the JIT is used.

Without Triton (or on CPU tensors) ``TorchCopier`` does the same with one indexed copy per
region: per layer, never per block. ``TRITON_INTERPRET=1`` runs the Triton kernel on CPU
tensors, which is how CI checks its indexing without a GPU.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

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
    #: Whether :meth:`gather` and :meth:`scatter` launch on the stream they are given (else on
    #: the current stream, which the caller must then set).
    explicit_stream: bool

    def gather(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any
    ) -> None:
        """Copy the slots of blocks ``ids[first : first + count]`` into ``staging`` (uint8),
        the ``i``-th of them at slot ``i``."""

    def scatter(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any
    ) -> None:
        """The inverse of :meth:`gather`."""


class TorchCopier:
    """One ``index_select`` / ``index_copy_`` per region, on the current stream."""

    explicit_stream = False

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

    def gather(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any = None
    ) -> None:
        block_ids = ids[first : first + count]
        for region, dst in self._views(staging, count):
            if dst.is_contiguous():  # a single region: no temporary needed
                torch.index_select(region, 0, block_ids, out=dst)
            else:
                dst.copy_(region.index_select(0, block_ids))

    def scatter(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any = None
    ) -> None:
        block_ids = ids[first : first + count]
        for region, src in self._views(staging, count):
            region.index_copy_(0, block_ids, src)


if HAS_TRITON:
    # `first` and `count` change with every piece: never specialize on them (one compiled
    # kernel per direction serves every piece).
    @triton.jit(do_not_specialize=["first", "count"])  # type: ignore[untyped-decorator]
    def _copy_rows(  # type: ignore[no-untyped-def]
        region_ptrs,
        region_strides,
        region_lens,
        region_offsets,
        block_ids,
        first,
        count,
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
        lanes = tl.arange(0, TILE)
        start = tl.program_id(1).to(tl.int64) * TILE
        step = tl.num_programs(1).to(tl.int64) * TILE
        for row in range(tl.program_id(0), count * num_regions, tl.num_programs(0)):
            i = row // num_regions
            r = row % num_regions
            block = tl.load(block_ids + first + i)
            base = tl.load(region_ptrs + r).to(staging.dtype)
            gpu = tl.multiple_of(base + block * tl.load(region_strides + r), ALIGN)
            stage = staging + tl.multiple_of(
                i.to(tl.int64) * slot_len + tl.load(region_offsets + r), VEC
            )
            length = tl.multiple_of(tl.load(region_lens + r), VEC)
            for t in range(start, length, step):
                idx = t + lanes
                mask = idx < length
                if TO_STAGING:
                    tl.store(stage + idx, tl.load(gpu + idx, mask=mask), mask=mask)
                else:
                    tl.store(gpu + idx, tl.load(stage + idx, mask=mask), mask=mask)


class TritonCopier:
    """One Triton launch per gather or scatter, whatever the number of layers."""

    explicit_stream = False  # until the direct launch is checked (CUDA only)

    def __init__(self, layout: KvLayout, max_programs: int | None = None) -> None:
        if not HAS_TRITON:  # pragma: no cover
            raise RuntimeError("triton is not importable")
        w = layout.element_bytes
        self._dtype = _INT_OF_WIDTH[w]
        self._slot_len = layout.slot_bytes // w
        self._num_regions = len(layout.regions)
        self._max_rows = max_programs  # programs along the rows axis (None: one per row)

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
        self._direct: dict[bool, Any] = {}
        if layout.device.type == "cuda":
            # Compile now: a first-job compile would hold transfer_async for most of a second.
            ids = torch.zeros(2, dtype=torch.int64, device=layout.device)
            staging = torch.empty(self._slot_len, dtype=self._dtype, device=layout.device)
            kernels = {
                to_staging: _copy_rows.warmup(
                    *self._args(ids, 1, 1, staging), **self._meta(to_staging), grid=(1,)
                )
                for to_staging in (True, False)
            }
            self.explicit_stream = self._check_direct_launch(layout, kernels, ids, staging)

    def _grid(self, count: int) -> tuple[int, int]:
        rows = count * self._num_regions
        return (rows if self._max_rows is None else min(rows, self._max_rows), self._tiles)

    def _check_direct_launch(
        self, layout: KvLayout, kernels: dict[bool, Any], ids: torch.Tensor, staging: torch.Tensor
    ) -> bool:
        """Call the compiled kernels directly where this Triton allows it: one JIT launch is
        recorded to see how it calls the compiled kernel, and a direct gather of block 0 must
        then give block 0's bytes. Anything unexpected keeps the JIT path."""
        try:
            recorded: list[tuple[Any, ...]] = []
            kernel = kernels[True]
            real = kernel.run

            def record(*call: Any) -> Any:
                recorded.append(call)
                return real(*call)

            # CompiledKernel.run is a property over _run in recent Triton, an attribute before.
            slot = "_run" if isinstance(getattr(type(kernel), "run", None), property) else "run"
            setattr(kernel, slot, record)
            try:
                _copy_rows[self._grid(1)](*self._args(ids, 1, 1, staging), **self._meta(True))
            finally:
                setattr(kernel, slot, real)
            torch.cuda.synchronize(layout.device)
            (call,) = recorded
            args = call[9:]  # after grid x3, stream, function, metadata, launch metadata, hooks
            expect = (*self._args(ids, 1, 1, staging), *self._meta(True).values())
            if len(args) != len(expect) or not all(
                a is e or (not isinstance(e, torch.Tensor) and a == e)
                for a, e in zip(args, expect, strict=True)
            ):
                return False
            for to_staging, k in kernels.items():
                self._direct[to_staging] = (k.run, k.function, k.packed_metadata)
            staging.zero_()
            stream = torch.cuda.current_stream(layout.device)
            self._launch(ids, 1, 1, staging, True, stream)
            torch.cuda.synchronize(layout.device)
            want = torch.cat([r[0] for r in layout.regions])
            if torch.equal(staging.view(torch.uint8), want):
                return True
        except Exception:  # any surprise means: use the JIT
            pass
        self._direct.clear()
        return False

    def _args(
        self, block_ids: torch.Tensor, first: int, count: int, staging: torch.Tensor
    ) -> tuple[object, ...]:
        return (
            self._ptrs,
            self._strides,
            self._lens,
            self._offsets,
            block_ids,
            first,
            count,
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
        self,
        ids: torch.Tensor,
        first: int,
        count: int,
        staging: torch.Tensor,
        to_staging: bool,
        stream: Any,
    ) -> None:
        if count == 0:
            return
        grid = self._grid(count)
        direct = self._direct.get(to_staging)
        if direct is None:
            _copy_rows[grid](
                *self._args(ids, first, count, staging.view(self._dtype)),
                **self._meta(to_staging),
            )
            return
        run, function, packed = direct
        run(
            grid[0], grid[1], 1, stream.cuda_stream, function, packed, None, None, None,
            self._ptrs.data_ptr(), self._strides.data_ptr(), self._lens.data_ptr(),
            self._offsets.data_ptr(), ids.data_ptr(), first, count, staging.data_ptr(),
            self._slot_len, self._num_regions, self._tile, to_staging, self._vec, self._align,
        )  # fmt: skip

    def gather(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any = None
    ) -> None:
        self._launch(ids, first, count, staging, True, stream)

    def scatter(
        self, ids: torch.Tensor, first: int, count: int, staging: torch.Tensor, stream: Any = None
    ) -> None:
        self._launch(ids, first, count, staging, False, stream)
