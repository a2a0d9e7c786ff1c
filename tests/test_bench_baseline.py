"""The CPU-mode yardstick: one plain copy_ of each transfer's bytes, through buffers larger than
the caches, recorded per direction."""

from __future__ import annotations

import torch

from kvoff.bench import host_baseline
from kvoff.bench.host_baseline import CopyBaseline


def test_each_sample_copies_the_bytes_asked_and_moves_through_the_buffers(monkeypatch) -> None:
    monkeypatch.setattr(host_baseline, "_POOL_BYTES", 1 << 16)
    b = CopyBaseline()
    copied: list[tuple[int, int, int]] = []
    real_copy = torch.Tensor.copy_

    def spy(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        base = b._src.data_ptr()  # type: ignore[union-attr]
        copied.append((src.data_ptr() - base, src.numel(), dst.numel()))
        return real_copy(dst, src)

    monkeypatch.setattr(torch.Tensor, "copy_", spy)
    for n in (10_000, 16_000, 0, 16_000, 16_000):
        b.sample("GPU_to_CPU", n)
    b.sample("CPU_to_GPU", 5)
    b.sample("GPU_to_CPU", 16_000)
    threads = torch.get_num_threads()
    samples = b.take()
    assert torch.get_num_threads() == threads  # restored after each copy
    assert [n for n, _ in samples["GPU_to_CPU"]] == [10_000, 16_000, 16_000, 16_000, 16_000]
    assert [n for n, _ in samples["CPU_to_GPU"]] == [5]
    assert all(s >= 0 for v in samples.values() for _, s in v)
    # Offsets move on (page-aligned) and wrap before the end; nothing sampled for 0 bytes.
    starts = [at for at, _, _ in copied]
    assert starts == [0, 12_288, 28_672, 45_056, 61_440, 0]
    assert [(n, m) for _, n, m in copied] == [(10_000, 10_000), *[(16_000, 16_000)] * 3,
                                              (5, 5), (16_000, 16_000)]  # fmt: skip
    assert b.take() == {}
    # A transfer larger than a quarter of the buffers grows them.
    b.sample("GPU_to_CPU", 40_000)
    assert b._src is not None and b._src.numel() == 160_000
