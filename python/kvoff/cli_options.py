"""Value types for ``kvoff bench``'s options and the checks that need several options at once.

Every bad value is refused before anything is allocated or run, as one line naming the option:
argparse reports a type's ``ArgumentTypeError`` (exit status 2), and the cross-option checks
raise :class:`UsageError`, which ``kvoff.cli.main`` reports the same way.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
from collections.abc import Callable
from pathlib import Path

from kvoff._sysmem import format_gib, physical_memory_bytes
from kvoff.bench.presets import PRESETS

# A week: longer than any bench or linger anyone means, and far inside what time.sleep takes
# (about 292 years); a larger number is a typo, and 'inf' or 'nan' would never end.
MAX_SECONDS = 7 * 24 * 3600
# Each active conversation holds its whole history (up to ~5k tokens); 10,000 of them is
# ~200 MB. The workload fills every slot before the first request, so 10**9 would never start.
MAX_CONVERSATIONS = 10_000
# Tensor-parallel ranks: a process each; no model kvoff simulates has more KV heads than this.
MAX_TP = 64
# numpy takes any non-negative seed; 64 bits is what a seed needs.
MAX_SEED = 2**64 - 1


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def _cut(text: str) -> str:
    # Echo the value back, but not a megabyte of it.
    return text if len(text) <= 40 else text[:37] + "..."


def _shown(text: str) -> str:
    return repr(_cut(text))


def _check_range(
    what: str, text: str, value: float, low: float, high: float | None, low_open: bool
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return
    got = _cut(text.strip())  # echo what was typed ("-1", not "-1.0")
    if isinstance(low, int) and isinstance(high, int):
        raise argparse.ArgumentTypeError(f"{what} must be in {low}..{high}, got {got}")
    if too_high:
        raise argparse.ArgumentTypeError(f"{what} must be at most {high:g}, got {got}")
    if (low == 0 and low_open) or (isinstance(low, int) and low == 1):
        raise argparse.ArgumentTypeError(f"{what} must be positive, got {got}")
    if low == 0:
        raise argparse.ArgumentTypeError(f"{what} must not be negative, got {got}")
    raise argparse.ArgumentTypeError(f"{what} must be at least {low:g}, got {got}")


def int_option(what: str, low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``low..high`` (``high=None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be an integer, got {_shown(text)}"
            ) from None
        _check_range(what, text, value, low, high, low_open=False)
        return value

    return parse


def float_option(
    what: str, low: float = 0.0, high: float | None = None, *, low_open: bool = True
) -> Callable[[str], float]:
    """A finite number above ``low`` (at least ``low`` when not ``low_open``), at most
    ``high``. 'nan' compares false with everything and 'inf' passes any lower bound, so
    finiteness is checked first, explicitly."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a number, got {_shown(text)}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{what} must be a finite number, got {_cut(text.strip())}"
            )
        _check_range(what, text, value, low, high, low_open)
        return value

    return parse


def address_option(text: str) -> str:
    if not text or not text.isprintable() or text.strip() != text:
        raise argparse.ArgumentTypeError(
            f"--metrics-addr must be a host name or address, got {_shown(text)}"
        )
    return text


def preset_option(text: str) -> str:
    if text not in PRESETS:
        raise argparse.ArgumentTypeError(
            f"unknown preset {_shown(text)}; choose one of {', '.join(PRESETS)}"
        )
    return text


def remote_option(text: str) -> str:
    """Check a ``--remote`` URL (nothing connects yet); its redacted form, the only one to
    show. Every message is built from the redacted form: the password is never printed."""
    try:
        from kvoff.remote import RemoteConfig
    except ImportError as e:  # the optional extra: redis-py and xxhash
        raise UsageError(
            f"--remote needs the remote extra (pip install 'kvoff[remote]'): {e.msg}"
        ) from None
    from kvoff.errors import KvoffError

    try:
        return RemoteConfig.from_url(text).redacted_url
    except KvoffError as e:
        raise UsageError(f"--remote: {e}") from None
    except ValueError:  # urllib's own refusals (e.g. an unclosed IPv6 bracket)
        raise UsageError("--remote: not a URL of the form redis://host:port/db") from None


def check_json_path(text: str) -> None:
    """Refuse a ``--json`` path that cannot be written, before the run rather than after it.

    A path that does not exist yet is created and removed again: that asks the OS itself
    (a name too long, a read-only file system, no permission, root or not), where a check of
    the parent's mode bits would only guess.
    """
    if text == "-":
        return
    if not text:
        raise UsageError("--json needs a path ('-' for stdout), got ''")
    if "\0" in text:
        raise UsageError(f"--json {_shown(text)}: a path cannot contain a NUL character")
    path = Path(text)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as e:  # e.g. a name over NAME_MAX
        raise UsageError(f"--json {_cut(text)}: cannot write it ({e.strerror})") from None
    if is_dir:
        raise UsageError(f"--json {text} is a directory, not a file")
    if exists:
        # Not opened: a FIFO would block here until its reader comes.
        if not os.access(path, os.W_OK):
            raise UsageError(f"--json {text} is not writable")
        return
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"--json {text}: directory {parent} {what}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return  # created meanwhile by someone else: the write will tell
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UsageError(f"--json {text}: directory {parent} is not writable") from None
        raise UsageError(f"--json {_cut(text)}: cannot write it ({e.strerror})") from None
    os.close(fd)
    os.unlink(path)


def cpu_tier_blocks(cpu_gb: float, cpu_block_bytes: int, preset: str) -> int:
    """CPU blocks in a tier of ``cpu_gb`` GiB; refuses a tier this machine cannot hold (checked
    on the float first: ``1e308`` GiB has no int byte count worth computing) or one smaller
    than a block."""
    mem = physical_memory_bytes()
    if mem is not None and cpu_gb * 2**30 > mem:
        raise UsageError(
            f"--cpu-gb {cpu_gb:g}: a CPU tier of {cpu_gb:g} GiB does not fit this machine's "
            f"{format_gib(mem)} of physical memory"
        )
    num_blocks = int(cpu_gb * 2**30) // cpu_block_bytes
    if num_blocks < 1:
        raise UsageError(
            f"--cpu-gb {cpu_gb:g} is smaller than one CPU block "
            f"({cpu_block_bytes} bytes for preset {preset})"
        )
    return num_blocks


def check_kv_fits(
    gpu_blocks: int,
    gpu_block_size: int,
    kv_bytes: int,
    tier_bytes: int,
    kv_on_cpu: bool,
    gpu_memory_bytes: int | None,
) -> None:
    """Refuse KV tensors the device cannot hold, with the sizes, before anything is allocated.
    On CPU tensors they share host memory with the tier."""
    what = f"--gpu-blocks {gpu_blocks} of --gpu-block-size {gpu_block_size} tokens"
    mem = physical_memory_bytes()
    if mem is not None and kv_on_cpu and tier_bytes + kv_bytes > mem:
        raise UsageError(
            f"{what}: the KV tensors, in host memory here ({format_gib(kv_bytes)}), and "
            f"the CPU tier ({format_gib(tier_bytes)}) need {format_gib(tier_bytes + kv_bytes)}, "
            f"more than this machine's {format_gib(mem)} of physical memory"
        )
    if gpu_memory_bytes is not None and kv_bytes > gpu_memory_bytes:
        raise UsageError(
            f"{what}: the KV tensors need {format_gib(kv_bytes)}, more than the GPU's "
            f"{format_gib(gpu_memory_bytes)}"
        )
