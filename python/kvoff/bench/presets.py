"""Model shapes the bench can simulate: only what sizes a KV block matters.

Dtypes are named, not ``torch.dtype`` objects, so that building ``kvoff``'s option parser
(which lists the presets) does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Bytes per element of each dtype a preset may name (torch's element_size()).
_ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelShape:
    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str  # a key of _ITEMSIZE, the name of a torch dtype

    def bytes_per_token(self) -> int:
        """KV bytes of one token over all layers (K and V)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * _ITEMSIZE[self.dtype]

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        dtype = getattr(torch, self.dtype)
        assert isinstance(dtype, torch.dtype)
        return dtype


PRESETS: dict[str, ModelShape] = {
    # Small enough for CI on two cores, big enough to exercise every code path.
    "tiny": ModelShape("tiny", num_layers=2, num_kv_heads=2, head_dim=16, dtype="bfloat16"),
    "small": ModelShape("small", num_layers=8, num_kv_heads=4, head_dim=64, dtype="bfloat16"),
    # Meta Llama 3 8B: 32 layers, 8 KV heads (GQA), head dim 128 (from its published config).
    "llama-3-8b": ModelShape(
        "llama-3-8b", num_layers=32, num_kv_heads=8, head_dim=128, dtype="bfloat16"
    ),
    # Meta Llama 3 70B: 80 layers, 8 KV heads, head dim 128.
    "llama-3-70b": ModelShape(
        "llama-3-70b", num_layers=80, num_kv_heads=8, head_dim=128, dtype="bfloat16"
    ),
}
