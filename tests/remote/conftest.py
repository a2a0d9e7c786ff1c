"""Fixtures for the remote tier: a real redis-server per test, tiers closed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the remote tier needs redis-py: pip install 'kvoff[remote]'")
pytest.importorskip("xxhash", reason="the remote tier needs xxhash: pip install 'kvoff[remote]'")

from _redis_proc import RedisServer
from _remote_data import BLOCK_BYTES

from kvoff.remote import RemoteLayout, RemoteTier


@pytest.fixture
def layout() -> RemoteLayout:
    return RemoteLayout(
        model="test/model-7b",
        dtype="bfloat16",
        layout="cross_layer",
        block_bytes=BLOCK_BYTES,
        cpu_block_size=64,
        gpu_block_size=16,
    )


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def make(
        config: dict[str, str] | None = None, *, start: bool = True, port: int | None = None
    ) -> RedisServer:
        s = RedisServer(tmp_path / f"redis{len(started)}", config, port=port)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def redis_server(server_factory: Callable[..., RedisServer]) -> RedisServer:
    return server_factory()


@pytest.fixture
def tier_factory() -> Iterator[Callable[..., RemoteTier]]:
    tiers: list[RemoteTier] = []

    def make(url: Any, layout: RemoteLayout, **kw: Any) -> RemoteTier:
        kw.setdefault("backoff_initial", 0.02)
        kw.setdefault("backoff_max", 0.2)
        t = RemoteTier(url, layout, **kw)
        tiers.append(t)
        return t

    yield make
    for t in tiers:
        t.close()
