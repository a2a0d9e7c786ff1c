"""Shared helpers for the transfer tests: KV tensors of every layout filled with random bytes,
and an independent reference for what one GPU block's slot must hold."""

from __future__ import annotations

import pytest
import torch

Kv = torch.Tensor | list[torch.Tensor]

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]
LAYOUTS = [
    "blocks_first",
    "blocks_first_padded",
    "kv_split",
    "kv_split_padded",
    "cross_layer",
    "canonical",
    "canonical_padded",
]

# triton 3.9 warns once at first compile about a default it will change; not ours to act on.
TRITON_WARNING = "ignore:TRITON_DEFAULT_FP_FUSION:UserWarning"


def random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random bytes reinterpreted as ``dtype``: every bit pattern, NaNs included."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    raw = torch.randint(0, 256, (n * torch.empty((), dtype=dtype).element_size(),), generator=g)
    return raw.to(torch.uint8).view(dtype).view(shape)


def make_kv(
    layout: str,
    *,
    device: str,
    dtype: torch.dtype = torch.bfloat16,
    num_blocks: int = 24,
    num_layers: int = 3,
    block_shape: tuple[int, ...] = (4, 2, 8),
    seed: int = 0,
) -> tuple[Kv, str]:
    """GPU KV for ``layout`` (``*_padded``: blocks further apart than their size) and the
    ``layout=`` name to pass. ``canonical``: one 2-D ``[num_blocks, page]`` tensor per layer,
    each page a different size (and, padded, each block stride too)."""
    pad = 5 if layout.endswith("_padded") else 0
    base = layout.removesuffix("_padded")
    inner = 1
    for s in block_shape:
        inner *= s
    if base == "cross_layer":
        t = random_tensor((num_blocks, num_layers, 2, *block_shape), dtype, seed)
        return t.to(device), base
    if base == "canonical":
        pages = []
        for i in range(num_layers):
            page, stride = inner + 4 * i, inner + 4 * i + (pad + 3 * i if pad else 0)
            flat = random_tensor((num_blocks, stride), dtype, seed * 100 + i).to(device)
            pages.append(flat[:, :page])
        return pages, base
    tensors = []
    for i in range(num_layers):
        lead = (2, num_blocks) if base == "kv_split" else (num_blocks,)
        flat = random_tensor((*lead, inner + pad), dtype, seed * 100 + i).to(device)
        tensors.append(flat[..., :inner].view(*lead, *block_shape))
    return tensors, base


def slot_ref(gpu_kv: Kv, layout: str, block: int) -> torch.Tensor:
    """The bytes of GPU block ``block`` across all layers, in slot order, on CPU."""
    if isinstance(gpu_kv, torch.Tensor):
        parts = [gpu_kv[block]]
    elif layout == "kv_split":
        parts = [t[kv, block] for t in gpu_kv for kv in (0, 1)]
    else:
        parts = [t[block] for t in gpu_kv]
    return torch.cat([p.contiguous().reshape(-1).view(torch.uint8).cpu() for p in parts])


def all_blocks(gpu_kv: Kv, layout: str, num_blocks: int) -> list[torch.Tensor]:
    return [slot_ref(gpu_kv, layout, b) for b in range(num_blocks)]


def poison(gpu_kv: Kv, layout: str, blocks: list[int], seed: int) -> None:
    """Overwrite the given GPU blocks with fresh random bytes, in every layer."""
    idx = torch.tensor(blocks)
    if isinstance(gpu_kv, torch.Tensor):
        t = gpu_kv
        t[idx] = random_tensor(tuple(t[idx].shape), t.dtype, seed).to(t.device)
        return
    for i, t in enumerate(gpu_kv):
        if layout == "kv_split":
            shape: tuple[int, ...] = tuple(t[:, idx].shape)
            t[:, idx] = random_tensor(shape, t.dtype, seed + i).to(t.device)
        else:
            t[idx] = random_tensor(tuple(t[idx].shape), t.dtype, seed + i).to(t.device)
