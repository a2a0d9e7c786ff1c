"""What a finished transfer job reports, and the GPU link's two direction names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from kvoff._core import Direction

__all__ = ["CPU_TO_GPU", "DIRECTIONS", "GPU_TO_CPU", "DirectionName", "TransferResult"]

# The type of a transfer direction. Values come from the core (`kvoff._core.Direction`), the one
# place the names are defined; tests check this Literal against them.
DirectionName = Literal["GPU_to_CPU", "CPU_to_GPU"]

# The spellings match the `transfer_type` label vLLM's offloading metrics use, so results can be
# fed to either exporter unchanged.
GPU_TO_CPU: Final = Direction.GPU_TO_CPU
CPU_TO_GPU: Final = Direction.CPU_TO_GPU
DIRECTIONS: Final = (GPU_TO_CPU, CPU_TO_GPU)


@dataclass(frozen=True)
class TransferResult:
    """One finished job.

    ``transfer_size`` is the number of bytes the job was asked to move (for a failed job too, so
    failures can be counted in bytes); ``transfer_time`` is seconds between the job's start and
    end events on the device (wall-clock on CPU), 0.0 for a failed job; ``transfer_type`` is
    ``"GPU_to_CPU"`` (store) or ``"CPU_to_GPU"`` (load).
    """

    job_id: int
    success: bool
    transfer_size: int
    transfer_time: float
    transfer_type: DirectionName
