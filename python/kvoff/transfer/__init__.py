"""CPU⇄GPU block transfers (docs/DESIGN.md, "Transfers"): the pinned CPU tier and the copy engine.

``CpuGpuTransfer`` moves KV blocks between an engine's GPU KV tensors and a block-major CPU tier
asynchronously; ``TransferResult`` is what a finished job reports.
"""

from __future__ import annotations

from kvoff.transfer.engine import CpuGpuTransfer
from kvoff.transfer.layout import LAYOUTS
from kvoff.transfer.result import CPU_TO_GPU, GPU_TO_CPU, TransferResult

__all__ = ["CPU_TO_GPU", "GPU_TO_CPU", "LAYOUTS", "CpuGpuTransfer", "TransferResult"]
