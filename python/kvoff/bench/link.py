"""The link's own limit, measured in the same run: one large copy between a pinned host buffer
and device memory per direction. The bench reports its transfer rates as a fraction of it."""

from __future__ import annotations

import torch

from kvoff._core import Direction

_PROBE_BYTES = 256 << 20
_REPEATS = 5


def single_copy_gb_per_s(device: torch.device) -> dict[str, float]:
    """GB/s of one ``_PROBE_BYTES`` copy each way (median of ``_REPEATS``), CUDA-event timed."""
    host = torch.empty(_PROBE_BYTES, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(_PROBE_BYTES, dtype=torch.uint8, device=device)
    stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    out: dict[str, float] = {}
    with torch.cuda.stream(stream):
        for name, dst, src in (
            (Direction.GPU_TO_CPU, host, dev),
            (Direction.CPU_TO_GPU, dev, host),
        ):
            dst.copy_(src, non_blocking=True)  # warm-up
            times = []
            for _ in range(_REPEATS):
                start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                start.record(stream)
                dst.copy_(src, non_blocking=True)
                end.record(stream)
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            out[name] = _PROBE_BYTES / sorted(times)[len(times) // 2] / 1e9
    del host, dev
    return out
