"""Where a GPU sits: its PCI address and the NUMA node Linux reports for it (sysfs)."""

from __future__ import annotations

from pathlib import Path

SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")


def pci_address(domain: int, bus: int, device: int) -> str:
    """The sysfs name of PCI function 0 of a device, e.g. ``0000:3b:00.0``."""
    return f"{domain:04x}:{bus:02x}:{device:02x}.0"


def numa_node(address: str, root: Path = SYSFS_PCI_DEVICES) -> int | None:
    """The NUMA node of the PCI device at ``address``; ``None`` where the platform does not
    say (no such file, or -1: a machine with one node, or firmware that gives none)."""
    try:
        node = int((root / address / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def cuda_numa_node(index: int) -> tuple[str | None, int | None]:
    """(PCI address, NUMA node) of CUDA device ``index``; ``(None, None)`` where torch does not
    give the PCI address."""
    import torch

    props = torch.cuda.get_device_properties(index)
    ids = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if not all(isinstance(i, int) for i in ids):  # a torch too old to give the PCI ids
        return None, None
    address = pci_address(*ids)  # type: ignore[arg-type]
    return address, numa_node(address)
