"""Byte views of the caller's block buffers (torch CPU tensors or anything with the buffer
protocol), checked once so the background threads only ever see flat ``uint8`` memoryviews."""

from __future__ import annotations

import sys
from typing import Any

from kvoff.errors import InvalidArgumentError

__all__ = ["as_readable", "as_writable"]


def _view(obj: Any, what: str) -> memoryview:
    # A tensor exists only once torch is imported: a scheduler process never imports it here.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        if obj.device.type != "cpu":
            raise InvalidArgumentError(f"{what} must be a CPU tensor, got one on {obj.device}")
        if not obj.is_contiguous():
            raise InvalidArgumentError(f"{what} must be a contiguous tensor")
        flat = obj.detach().reshape(-1).view(torch.uint8)
        return memoryview(flat.numpy())
    try:
        view = memoryview(obj)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} must be a CPU tensor or a bytes-like buffer, got {type(obj).__name__}"
        ) from None
    if not view.contiguous:
        raise InvalidArgumentError(f"{what} must be a contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def as_readable(obj: Any, nbytes: int, *, what: str) -> memoryview:
    view = _view(obj, what)
    if view.nbytes != nbytes:
        raise InvalidArgumentError(f"{what} must be {nbytes} bytes, got {view.nbytes}")
    return view


def as_writable(obj: Any, nbytes: int, *, what: str) -> memoryview:
    view = as_readable(obj, nbytes, what=what)
    if view.readonly:
        raise InvalidArgumentError(f"{what} must be writable")
    return view
