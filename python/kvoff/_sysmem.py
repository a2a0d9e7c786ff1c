"""How much memory this machine has, so a tier that cannot fit is refused before it is built."""

from __future__ import annotations

import os


def physical_memory_bytes() -> int | None:
    """Total physical memory in bytes, or ``None`` where the OS does not say.

    Pinned (page-locked) memory can never exceed it, and pageable memory beyond it can only
    swap: a CPU tier larger than this is a configuration error, whatever is free right now.
    """
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    if pages <= 0 or page_size <= 0:
        return None
    return int(pages) * int(page_size)


def format_gib(num_bytes: int) -> str:
    """``num_bytes`` as GiB with two decimals, for error messages."""
    return f"{num_bytes / (1 << 30):.2f} GiB"
