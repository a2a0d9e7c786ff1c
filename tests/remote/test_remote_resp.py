"""The direct bulk reader returns exactly what the server holds, at every size around its
threshold and whatever part of a reply was already buffered."""

from __future__ import annotations

import os

import pytest
import redis
from _redis_proc import RedisServer

from kvoff.remote.resp import DIRECT_READ_MIN, KvoffConnection

SIZES = [0, 1, DIRECT_READ_MIN - 1, DIRECT_READ_MIN, DIRECT_READ_MIN + 1, 3 << 20, (4 << 20) + 7]


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    pool = redis.ConnectionPool(
        connection_class=KvoffConnection, port=redis_server.port, socket_read_size=4096
    )
    return redis.Redis(connection_pool=pool)


def test_single_gets_of_every_size(client: redis.Redis) -> None:
    for size in SIZES:
        value = os.urandom(size)
        client.set(f"k{size}", value)
        got = client.get(f"k{size}")
        assert got is not None and bytes(got) == value, size
        # The large ones came through the direct reader (redis-py's own returns bytes).
        assert isinstance(got, bytearray) == (size >= DIRECT_READ_MIN), size


def test_pipelined_replies_mixing_small_and_large(client: redis.Redis) -> None:
    # Small replies around the large ones land in the same socket buffer, so a large reply
    # starts part-way through buffered data and the next reply follows its last byte.
    values = {f"k{i}": os.urandom(s) for i, s in enumerate(SIZES * 2)}
    for k, v in values.items():
        client.set(k, v)
    pipe = client.pipeline(transaction=False)
    for k in values:
        pipe.get(k)
        pipe.strlen(k)
        pipe.get("missing")
    results = pipe.execute()
    for i, (k, v) in enumerate(values.items()):
        got, length, missing = results[3 * i : 3 * i + 3]
        assert bytes(got) == v and length == len(v) and missing is None, k
    assert client.ping() is True
