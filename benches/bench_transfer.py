"""Transfer cost under pytest-benchmark, on CPU tensors (always) and on CUDA (when present): a
store and a load of 64 blocks x 32 layers x K/V x 4 KiB (16 MiB) by kvoff, against a
``copy_`` of the same 16 MiB between two contiguous buffers (the machine's own limit, the
target's baseline: CPU-mode transfers at least half of it) and a per-block, per-layer
``copy_`` loop (what a naive engine does). The GPU link figures come from ``gpu_transfer.py``;
this file keeps the host-side path measured where CI runs.

    pytest benches/bench_transfer.py --benchmark-enable
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kvoff.transfer import CpuGpuTransfer

LAYERS, BLOCKS, POOL, CHUNK = 32, 64, 256, 4096
NBYTES = BLOCKS * LAYERS * 2 * CHUNK
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def _setup(device: str) -> tuple[list[torch.Tensor], list[int]]:
    kv = [
        torch.randn(2, POOL, CHUNK // 2, dtype=torch.bfloat16, device=device) for _ in range(LAYERS)
    ]
    ids = torch.randperm(POOL, generator=torch.Generator().manual_seed(0))[:BLOCKS].tolist()
    return kv, ids


def _info(benchmark: Any, device: str, direction: str, method: str) -> None:
    benchmark.group = f"transfer {direction} 16 MiB ({device})"
    benchmark.extra_info.update({"bytes": NBYTES, "chunk_bytes": CHUNK, "method": method})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["GPU_to_CPU", "CPU_to_GPU"])
def test_kvoff(benchmark: Any, device: str, direction: str) -> None:
    kv, ids = _setup(device)
    t = CpuGpuTransfer(kv, 16, 16, 2 * BLOCKS, layout="kv_split")
    cpu = list(range(BLOCKS))
    job = iter(range(1 << 40))
    t.transfer_async(next(job), "GPU_to_CPU", ids, cpu)  # something to load back
    t.wait(list(t.in_flight()))
    _info(benchmark, device, direction, f"kvoff ({t.copier})")

    def run() -> None:
        jid = next(job)
        t.transfer_async(jid, direction, ids, cpu)
        assert t.wait([jid])[0].success

    benchmark(run)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["GPU_to_CPU", "CPU_to_GPU"])
def test_one_contiguous_copy(benchmark: Any, device: str, direction: str) -> None:
    dev = torch.ones(NBYTES, dtype=torch.uint8, device=device)
    host = torch.zeros(NBYTES, dtype=torch.uint8, pin_memory=device == "cuda")
    dst, src = (host, dev) if direction == "GPU_to_CPU" else (dev, host)
    _info(benchmark, device, direction, "one copy_ of the same bytes")

    def run() -> None:
        dst.copy_(src, non_blocking=True)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark(run)


@pytest.mark.parametrize("device", DEVICES)
def test_naive_loop_store(benchmark: Any, device: str) -> None:
    kv, ids = _setup(device)
    host = torch.empty(
        BLOCKS, LAYERS, 2, CHUNK // 2, dtype=torch.bfloat16, pin_memory=device == "cuda"
    )
    _info(benchmark, device, "GPU_to_CPU", "per-block per-layer copy_")

    def store() -> None:
        for i, g in enumerate(ids):
            for layer, x in enumerate(kv):
                for k in (0, 1):
                    host[i, layer, k].copy_(x[k, g], non_blocking=True)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark(store)
