"""CPU mode keeps the garbage collector out of a copy: a collection set off by the copy's own
small allocations would be timed as part of the transfer (hundreds of milliseconds for a full
one in a busy engine), so collection is off while a job copies and back as it was after."""

from __future__ import annotations

import gc

import pytest
import torch

from kvoff.transfer import CpuGpuTransfer, host_copy


def _transfer() -> CpuGpuTransfer:
    kv = [torch.arange(2 * 8 * 64, dtype=torch.int16).view(2, 8, 64) for _ in range(2)]
    return CpuGpuTransfer(kv, 4, 8, 4, layout="kv_split")


@pytest.mark.parametrize("enabled", [True, False])
def test_no_collection_during_the_copy_and_the_setting_restored(
    monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    seen: list[bool] = []
    real = host_copy.HostCopier.run_job

    def spy(self: host_copy.HostCopier, plan: object, store: bool) -> None:
        seen.append(gc.isenabled())
        real(self, plan, store)  # type: ignore[arg-type]

    monkeypatch.setattr(host_copy.HostCopier, "run_job", spy)
    t = _transfer()
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        t.transfer_async(0, "GPU_to_CPU", [0, 1], [0])
        t.transfer_async(1, "CPU_to_GPU", [5, 6], [0])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]
    assert [r.success for r in t.wait([0, 1])] == [True, True]


def test_a_copy_that_raises_still_turns_collection_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: host_copy.HostCopier, plan: object, store: bool) -> None:
        raise RuntimeError("copy failed")

    monkeypatch.setattr(host_copy.HostCopier, "run_job", boom)
    t = _transfer()
    assert gc.isenabled()
    t.transfer_async(0, "GPU_to_CPU", [0, 1], [0])
    assert gc.isenabled()
    (r,) = t.wait([0])
    assert (r.success, r.transfer_size, r.transfer_time) == (False, 2 * t.gpu_block_bytes, 0.0)
