"""Which CPUs sit on a CUDA device's NUMA node, read from sysfs.

The CPU tier's allocating thread runs on these CPUs, so that (under Linux's default, local,
memory policy) the tier's pages land on the node whose memory controller the GPU's DMA reaches
without crossing the socket interconnect. No NUMA library is used: the Python bindings of
libnuma on PyPI are unmaintained, and the CPU affinity of one thread is in the standard library.
A process started under ``numactl --membind`` keeps its own memory policy, which wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = [
    "allocation_cpus",
    "gpu_numa_node",
    "node_cpus",
    "num_nodes",
    "parse_cpulist",
    "pci_bus_id",
]

SYSFS = Path("/sys")


def parse_cpulist(text: str) -> set[int]:
    """The CPUs of a sysfs cpulist such as ``"0-3,8-11,16"`` (empty text: none)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def gpu_numa_node(pci_bus_id: str, sysfs: Path = SYSFS) -> int | None:
    """The NUMA node of the PCI device ``pci_bus_id`` (``"0000:17:00.0"``), or None where the
    kernel does not say (``-1``: a single-node machine, or no affinity reported)."""
    text = _read(sysfs / "bus" / "pci" / "devices" / pci_bus_id.lower() / "numa_node")
    if text is None:
        return None
    try:
        node = int(text)
    except ValueError:
        return None
    return node if node >= 0 else None


def node_cpus(node: int, sysfs: Path = SYSFS) -> set[int] | None:
    text = _read(sysfs / "devices" / "system" / "node" / f"node{node}" / "cpulist")
    return None if text is None else parse_cpulist(text)


def num_nodes(sysfs: Path = SYSFS) -> int:
    base = sysfs / "devices" / "system" / "node"
    try:
        return sum(1 for p in base.iterdir() if p.name[4:].isdigit() and p.name.startswith("node"))
    except OSError:
        return 1


def pci_bus_id(device: torch.device) -> str | None:
    """The device's PCI address as sysfs spells it, or None if this torch does not say."""
    props = torch.cuda.get_device_properties(device)
    ids = [getattr(props, f"pci_{k}_id", None) for k in ("domain", "bus", "device")]
    if None in ids:  # an older torch
        return None
    domain, bus, dev = ids
    return f"{domain:04x}:{bus:02x}:{dev:02x}.0"


def allocation_cpus(bus_id: str | None, sysfs: Path = SYSFS) -> tuple[int | None, set[int] | None]:
    """(node, CPUs) to allocate the tier for the device at ``bus_id`` on: the node's CPUs that
    this process may run on. ``(None, None)`` on a one-node machine, where the kernel does not
    say, or where none of the node's CPUs is allowed to this process."""
    if bus_id is None or not hasattr(os, "sched_setaffinity") or num_nodes(sysfs) < 2:
        return None, None
    node = gpu_numa_node(bus_id, sysfs)
    if node is None:
        return None, None
    cpus = node_cpus(node, sysfs)
    if not cpus:
        return None, None
    allowed = cpus & os.sched_getaffinity(0)
    return (node, allowed) if allowed else (None, None)
