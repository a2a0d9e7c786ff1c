"""The remote tier with the pinned tier's own block views, as phase B wires them: one engine's
stored CPU block goes out borrowed, another engine fetches it into a CPU block of its own and
loads it onto its "GPU" (CPU mode), bit for bit. Also: a failure inside a background thread
does not stop it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from _redis_proc import RedisServer

import kvoff.remote.reader as reader_module
from kvoff.remote import RemoteLayout, RemoteTier
from kvoff.transfer import CpuGpuTransfer

TierFactory = Callable[..., RemoteTier]


def _engine(seed: int | None) -> tuple[CpuGpuTransfer, torch.Tensor]:
    # 8 GPU blocks of 16 tokens, 2 layers' K and V of 4 heads x 32 dims in bfloat16 per block.
    shape = (8, 2, 2, 16, 4, 32)
    if seed is None:
        kv = torch.zeros(shape, dtype=torch.bfloat16)
    else:
        g = torch.Generator().manual_seed(seed)
        kv = torch.randn(shape, generator=g).to(torch.bfloat16)
    return CpuGpuTransfer(kv, gpu_block_size=16, cpu_block_size=64, num_cpu_blocks=4), kv


def _layout(t: CpuGpuTransfer) -> RemoteLayout:
    return RemoteLayout(
        model="test/cpu-tier", dtype="bfloat16", layout=t.layout,
        block_bytes=t.cpu_block_bytes, cpu_block_size=64, gpu_block_size=16,
    )  # fmt: skip


def test_a_stored_cpu_block_reaches_another_engines_gpu(
    redis_server: RedisServer, tier_factory: TierFactory
) -> None:
    (a, gpu_a), (b, gpu_b) = _engine(1), _engine(None)
    layout = _layout(a)
    a.transfer_async(0, "GPU_to_CPU", [4, 5, 6, 7], [1])
    assert a.wait([0])[0].success
    writer_tier = tier_factory(redis_server.url, layout, lookup=False, fetch=False)
    assert writer_tier.writer is not None
    h = b"\x11" * 32
    assert writer_tier.writer.enqueue(h, a.cpu_block(1), copy=False, token=("a", 1))
    assert writer_tier.writer.flush(20)
    assert writer_tier.writer.take_released() == [("a", 1)]
    reader_tier = tier_factory(redis_server.url, layout, write=False)
    assert reader_tier.lookup is not None and reader_tier.fetcher is not None
    assert reader_tier.lookup.wait(reader_tier.lookup.submit([h]), 20) is not None
    job = reader_tier.fetcher.submit([(h, b.cpu_block(3))])
    (fetched,) = reader_tier.fetcher.wait([job], 20)
    assert fetched.ok == (True,) and fetched.nbytes == a.cpu_block_bytes
    assert torch.equal(b.cpu_block(3), a.cpu_block(1))
    b.transfer_async(1, "CPU_to_GPU", [0, 1, 2, 3], [3])
    assert b.wait([1])[0].success
    assert torch.equal(gpu_b[0:4].view(torch.int16), gpu_a[4:8].view(torch.int16))


def test_an_unexpected_failure_does_not_stop_the_fetch_threads(
    redis_server: RedisServer, tier_factory: TierFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = _engine(2)
    layout = _layout(a)
    tier = tier_factory(redis_server.url, layout, fetch_threads=1)
    assert tier.writer is not None and tier.fetcher is not None
    h = b"\x22" * 32
    tier.writer.enqueue(h, a.cpu_block(0))
    assert tier.writer.flush(20)
    real = reader_module.decode
    calls = {"n": 0}

    def broken_once(*args: object) -> memoryview:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(reader_module, "decode", broken_once)
    dest = np.zeros(a.cpu_block_bytes, dtype=np.uint8)
    (first,) = tier.fetcher.wait([tier.fetcher.submit([(h, dest)])], 20)
    assert first.ok == (False,) and not dest.any()
    (second,) = tier.fetcher.wait([tier.fetcher.submit([(h, dest)])], 20)
    assert second.ok == (True,)
    assert bytes(dest) == a.cpu_block(0).numpy().tobytes()
