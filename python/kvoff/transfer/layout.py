"""How the engine's GPU KV tensors are laid out, validated once, reduced to byte regions.

Every supported layout reduces to a list of *regions*: a 2-D ``uint8`` view ``[num_blocks,
chunk_bytes]`` whose rows are one block's bytes for one layer (or one layer's K or V, or all
layers for a cross-layer tensor), each row contiguous, rows ``stride(0)`` bytes apart. One GPU
block's *slot* in the CPU tier is the concatenation of its row in every region, in region order.
Copies then never need to know about dtypes, heads or token dimensions.

Layouts (``layout=`` keyword of ``CpuGpuTransfer``):

- ``"blocks_first"``: a sequence (or mapping, in insertion order) of per-layer tensors
  ``[num_blocks, ...]``. Regions: one per layer.
- ``"kv_split"``: a sequence of per-layer tensors ``[2, num_blocks, ...]`` (K then V).
  Regions: layer 0 K, layer 0 V, layer 1 K, ...
- ``"cross_layer"``: one tensor ``[num_blocks, ...]`` holding every layer of a block. One region.
- ``"canonical"``: a sequence (or mapping) of 2-D tensors ``[num_blocks, page_bytes]``, each
  with a block stride of its own (rows may be padded, e.g. ``t[:, :page]`` of a wider tensor):
  vLLM's canonical KV caches (``CanonicalKVCaches.tensors``, int8 pages), one region each.
  A single 2-D tensor is accepted as a sequence of one.

``layout=None`` infers: a single tensor is ``"cross_layer"``; a sequence is ``"blocks_first"``
unless every tensor has ``shape[0] == 2`` (it could be either, so the caller must say which).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from kvoff.errors import InvalidArgumentError
from kvoff.transfer.overlap import check_disjoint

__all__ = ["LAYOUTS", "KvLayout", "LayoutName", "parse_layout", "positive_int"]

LayoutName = Literal["blocks_first", "kv_split", "cross_layer", "canonical"]
LAYOUTS: tuple[LayoutName, ...] = ("blocks_first", "kv_split", "cross_layer", "canonical")

# Widest unit the gather kernel moves per element; every region address, row stride and row
# length must be a multiple of it.
_MAX_ELEMENT_BYTES = 8


@dataclass(frozen=True)
class KvLayout:
    """The validated GPU side of a transfer: byte regions and where each lands in a slot."""

    layout: LayoutName
    device: torch.device
    num_layers: int
    num_blocks: int
    regions: tuple[torch.Tensor, ...]  # uint8 [num_blocks, chunk_bytes] views
    chunk_bytes: tuple[int, ...]
    slot_offsets: tuple[int, ...]  # byte offset of each region's row inside a slot
    slot_bytes: int  # one GPU block, all regions
    element_bytes: int  # 8, 4, 2 or 1: the widest unit all addresses and sizes allow


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be a positive integer, got {type(value).__name__} {value!r}"
        ) from None
    if n <= 0:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {n}")
    return n


def _tensors(gpu_kv: object) -> tuple[list[str], list[torch.Tensor]]:
    """The tensors, and the name of each for messages (``gpu_kv[i]``, or the mapping's key)."""
    if isinstance(gpu_kv, torch.Tensor):
        items: list[object] = [gpu_kv]
        names = ["gpu_kv"]
    elif isinstance(gpu_kv, Mapping):
        items = list(gpu_kv.values())
        names = [f"gpu_kv[{k!r}]" for k in gpu_kv]
    elif isinstance(gpu_kv, Sequence) and not isinstance(gpu_kv, (str, bytes)):
        items = list(gpu_kv)
        names = [f"gpu_kv[{i}]" for i in range(len(items))]
    else:
        raise InvalidArgumentError(
            "gpu_kv must be a tensor, a sequence of tensors or a mapping of layer name to "
            f"tensor, got {type(gpu_kv).__name__}"
        )
    if not items:
        raise InvalidArgumentError("gpu_kv holds no tensors")
    for name, t in zip(names, items, strict=True):
        if not isinstance(t, torch.Tensor):
            raise InvalidArgumentError(f"{name} is a {type(t).__name__}, not a tensor")
    return names, items  # type: ignore[return-value]


def _infer(gpu_kv: object, tensors: list[torch.Tensor]) -> LayoutName:
    if isinstance(gpu_kv, torch.Tensor):
        return "cross_layer"
    if all(t.dim() >= 2 and t.shape[0] == 2 for t in tensors):
        raise InvalidArgumentError(
            "every tensor has shape[0] == 2: pass layout='kv_split' for [2, num_blocks, ...] "
            "tensors or layout='blocks_first' for [num_blocks=2, ...] tensors"
        )
    return "blocks_first"


def _region(t: torch.Tensor, what: str) -> torch.Tensor:
    """A [num_blocks, chunk_bytes] uint8 view of a blocks-first tensor, without copying."""
    if t.dim() < 1 or t.shape[0] == 0:
        raise InvalidArgumentError(f"{what} has no blocks (shape {tuple(t.shape)})")
    if t.numel() == 0:
        raise InvalidArgumentError(f"{what} has empty blocks (shape {tuple(t.shape)})")
    if t.dtype.is_complex or t.element_size() == 0:
        raise InvalidArgumentError(f"{what} has unsupported dtype {t.dtype}")
    num_blocks = t.shape[0]
    if not t[0].is_contiguous():
        raise InvalidArgumentError(
            f"{what}: a block's elements must be contiguous (shape {tuple(t.shape)}, "
            f"strides {t.stride()})"
        )
    per_block = t[0].numel()
    if num_blocks > 1 and t.stride(0) < per_block:
        raise InvalidArgumentError(
            f"{what}: blocks overlap (block stride {t.stride(0)} < {per_block} elements)"
        )
    rows = t.as_strided((num_blocks, per_block), (t.stride(0), 1))
    return rows.view(torch.uint8) if t.dtype != torch.uint8 else rows


def parse_layout(gpu_kv: object, layout: str | None) -> KvLayout:
    """Validate ``gpu_kv`` against ``layout`` (inferred when None) and reduce it to regions."""
    names, tensors = _tensors(gpu_kv)
    if layout is None:
        name = _infer(gpu_kv, tensors)
    elif layout in LAYOUTS:
        name = layout
    else:
        raise InvalidArgumentError(f"unknown layout {layout!r}; expected one of {list(LAYOUTS)}")

    device = tensors[0].device
    if device.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"gpu_kv is on {device}; expected a CUDA device (or CPU)")
    for what, t in zip(names, tensors, strict=True):
        if t.device != device:
            raise InvalidArgumentError(f"{what} is on {t.device}, {names[0]} on {device}")

    regions: list[torch.Tensor] = []
    region_names: list[str] = []
    if name == "cross_layer":
        if len(tensors) != 1:
            raise InvalidArgumentError(f"layout 'cross_layer' takes one tensor, got {len(tensors)}")
        regions.append(_region(tensors[0], "gpu_kv"))
        region_names.append("gpu_kv")
    elif name == "blocks_first":
        regions.extend(_region(t, what) for what, t in zip(names, tensors, strict=True))
        region_names.extend(names)
    elif name == "canonical":
        for what, t in zip(names, tensors, strict=True):
            if t.dim() != 2:
                raise InvalidArgumentError(
                    f"layout 'canonical' takes 2-D [num_blocks, page_bytes] tensors; {what} "
                    f"has shape {tuple(t.shape)}"
                )
            regions.append(_region(t, what))
            region_names.append(what)
    else:
        for what, t in zip(names, tensors, strict=True):
            if t.dim() < 2 or t.shape[0] != 2:
                raise InvalidArgumentError(
                    f"layout 'kv_split' needs [2, num_blocks, ...] tensors; {what} has "
                    f"shape {tuple(t.shape)}"
                )
            regions.extend(_region(t[kv], f"{what}[{kv}]") for kv in (0, 1))
            region_names.extend(f"{what}[{kv}]" for kv in (0, 1))

    num_blocks = regions[0].shape[0]
    for i, r in enumerate(regions):
        if r.shape[0] != num_blocks:
            raise InvalidArgumentError(
                f"all layers must have the same number of blocks: region {i} has "
                f"{r.shape[0]}, region 0 has {num_blocks}"
            )
    check_disjoint(regions, region_names)
    starts = [r.data_ptr() for r in regions]

    chunk = tuple(int(r.shape[1]) for r in regions)
    offsets: list[int] = []
    acc = 0
    for c in chunk:
        offsets.append(acc)
        acc += c
    width = _MAX_ELEMENT_BYTES
    for v in (*chunk, *starts, *(r.stride(0) for r in regions)):
        while v % width:
            width //= 2
    return KvLayout(
        layout=name,
        device=device,
        num_layers=len(tensors) if name != "cross_layer" else 1,  # canonical: pages
        num_blocks=num_blocks,
        regions=tuple(regions),
        chunk_bytes=chunk,
        slot_offsets=tuple(offsets),
        slot_bytes=acc,
        element_bytes=width,
    )
