"""Transfer cost under pytest-benchmark: kvoff's staged copy against a per-block, per-layer
``copy_`` loop, for one store of 64 blocks x 32 layers x K/V x 4 KiB (16 MiB), on CPU tensors
(always) and on CUDA (when present). The GPU link figures come from ``gpu_transfer.py``; this
file keeps the host-side path measured where CI runs.

    pytest benches/bench_transfer.py --benchmark-enable
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kvoff.transfer import CpuGpuTransfer

LAYERS, BLOCKS, POOL, CHUNK = 32, 64, 256, 4096
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


def _info(benchmark: Any, device: str, method: str) -> None:
    benchmark.group = f"transfer store 16 MiB ({device})"
    benchmark.extra_info.update(
        {"bytes": BLOCKS * LAYERS * 2 * CHUNK, "chunk_bytes": CHUNK, "method": method}
    )


@pytest.mark.parametrize("device", DEVICES)
def test_kvoff_store(benchmark: Any, device: str) -> None:
    kv, ids = _setup(device)
    t = CpuGpuTransfer(kv, 16, 16, BLOCKS, layout="kv_split")
    cpu = list(range(BLOCKS))
    job = iter(range(1 << 40))
    _info(benchmark, device, f"kvoff ({t.copier})")

    def store() -> None:
        jid = next(job)
        t.transfer_async(jid, "GPU_to_CPU", ids, cpu)
        assert t.wait([jid])[0].success

    benchmark(store)


@pytest.mark.parametrize("device", DEVICES)
def test_naive_loop_store(benchmark: Any, device: str) -> None:
    kv, ids = _setup(device)
    host = torch.empty(
        BLOCKS, LAYERS, 2, CHUNK // 2, dtype=torch.bfloat16, pin_memory=device == "cuda"
    )
    _info(benchmark, device, "per-block per-layer copy_")

    def store() -> None:
        for i, g in enumerate(ids):
            for layer, x in enumerate(kv):
                for k in (0, 1):
                    host[i, layer, k].copy_(x[k, g], non_blocking=True)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark(store)
