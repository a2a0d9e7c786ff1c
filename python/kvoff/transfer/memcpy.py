"""Asynchronous copies by address on an explicit stream, at the lowest host cost available.

``Tensor.copy_(non_blocking=True)`` between device memory and pinned memory costs the host
about 25 microseconds on an H200's host (the dispatcher, a TensorIterator, the pinned
allocator's bookkeeping), and it needs views made and the current stream set first. Where
cuda-python (the ``cuda-bindings`` package, NVIDIA's own binding) is importable, a piece's
copies are ``cuMemcpyAsync(dst, src, bytes, stream)`` calls instead: addresses are integers,
the stream is named, a call costs a microsecond or two. A probe copy at construction must come
back exact, else torch's ``copy_`` is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Memcpy", "driver_copy_available"]

DriverCopy = Callable[[int, int, int, int], None]


def _driver_copy() -> DriverCopy | None:
    try:
        from cuda.bindings import driver
    except ImportError:
        return None
    call, success = driver.cuMemcpyAsync, driver.CUresult.CUDA_SUCCESS

    def copy(dst: int, src: int, nbytes: int, stream: int) -> None:
        (err,) = call(dst, src, nbytes, stream)
        if err != success:
            raise RuntimeError(f"cuMemcpyAsync of {nbytes} bytes failed: {err}")

    return copy


def driver_copy_available() -> bool:
    """Whether cuda-python's driver binding imports (the copies then go through it, once
    :class:`Memcpy`'s probe copy has come back exact)."""
    return _driver_copy() is not None


class Memcpy:
    """``copy(dst_tensor, dst_offset, src_tensor, src_offset, nbytes, stream)`` (uint8
    tensors, byte offsets)."""

    def __init__(self, device: torch.device) -> None:
        self.direct: DriverCopy | None = None
        copy = _driver_copy()
        if copy is None:
            return
        try:
            src = torch.arange(4096, device=device, dtype=torch.int32).view(torch.uint8)
            dst = torch.zeros(src.numel(), dtype=torch.uint8, pin_memory=True)
            stream = torch.cuda.current_stream(device)
            copy(dst.data_ptr() + 16, src.data_ptr() + 32, 1024, stream.cuda_stream)
            stream.synchronize()
            if torch.equal(dst[16:1040], src[32:1056].cpu()) and not dst[:16].any():
                self.direct = copy
        except Exception:  # any surprise: torch's copy_ will do
            self.direct = None

    @property
    def explicit_stream(self) -> bool:
        """Whether copies go on the stream given (else on the current one, set by the caller)."""
        return self.direct is not None

    def copy(
        self,
        dst: torch.Tensor,
        dst_off: int,
        src: torch.Tensor,
        src_off: int,
        nbytes: int,
        stream: Any,
    ) -> None:
        if self.direct is not None:
            self.direct(
                dst.data_ptr() + dst_off, src.data_ptr() + src_off, nbytes, stream.cuda_stream
            )
        else:
            dst[dst_off : dst_off + nbytes].copy_(
                src[src_off : src_off + nbytes], non_blocking=True
            )
