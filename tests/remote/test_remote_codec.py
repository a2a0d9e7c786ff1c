"""Keys and the value header, without a server: what is accepted and why the rest is refused."""

from __future__ import annotations

import dataclasses
import struct

import pytest
import xxhash

from kvoff.errors import HashTypeError, InvalidArgumentError
from kvoff.remote import HEADER_BYTES, Keyspace, Rejected, RemoteLayout
from kvoff.remote.codec import build_value, decode

LAYOUT = RemoteLayout(
    model="m", dtype="float16", layout="kv_split", block_bytes=1000, cpu_block_size=32,
    gpu_block_size=16,
)  # fmt: skip


def test_every_field_that_shapes_the_bytes_changes_the_digest() -> None:
    base = LAYOUT.digest()
    assert len(base) == 16
    variants = [
        dataclasses.replace(LAYOUT, model="m2"),
        dataclasses.replace(LAYOUT, dtype="bfloat16"),
        dataclasses.replace(LAYOUT, layout="cross_layer"),
        dataclasses.replace(LAYOUT, block_bytes=1001),
        dataclasses.replace(LAYOUT, cpu_block_size=64),
        dataclasses.replace(LAYOUT, gpu_block_size=32),
        dataclasses.replace(LAYOUT, tp_size=2),
        dataclasses.replace(LAYOUT, tp_size=2, tp_rank=1),
        dataclasses.replace(LAYOUT, extra=(("kv_quant", "fp8"),)),
    ]
    digests = {v.digest() for v in variants}
    assert base not in digests and len(digests) == len(variants)
    # The digest depends on values, not on the order extra pairs were given in.
    a = dataclasses.replace(LAYOUT, extra=(("a", "1"), ("b", "2")))
    b = dataclasses.replace(LAYOUT, extra=(("b", "2"), ("a", "1")))
    assert a.digest() == b.digest()
    assert LAYOUT.for_rank(0) == LAYOUT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": ""}, "model must be a non-empty str"),
        ({"block_bytes": 0}, "block_bytes must be a positive int"),
        ({"block_bytes": True}, "block_bytes must be a positive int"),
        ({"cpu_block_size": 24}, "cpu_block_size=24 is not a multiple of gpu_block_size=16"),
        ({"tp_rank": 1}, r"tp_rank must be in \[0, tp_size=1\)"),
        ({"extra": (("a", 1),)}, r"extra must hold \(str, str\) pairs"),
    ],
)
def test_bad_layouts(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        dataclasses.replace(LAYOUT, **change)


def test_keys_name_layout_and_hash_without_hash_tags() -> None:
    ks = Keyspace(LAYOUT)
    digest = LAYOUT.digest().hex()
    assert ks.key(b"\x01\xab") == f"kvoff:{digest}:b01ab".encode()
    assert ks.key(5) == f"kvoff:{digest}:i{'0' * 31}5".encode()
    assert ks.key(-1) == f"kvoff:{digest}:i{'f' * 32}".encode()
    # An int and the bytes of the same value never share a key.
    assert ks.key(1) != ks.key((1).to_bytes(16, "big"))
    assert b"{" not in ks.key(b"{x}") and b"}" not in ks.key(b"{x}")
    assert Keyspace(LAYOUT, prefix="other").key(5).startswith(b"other:")
    assert Keyspace(LAYOUT.for_rank(0)).key(5) != Keyspace(
        dataclasses.replace(LAYOUT, tp_size=2, tp_rank=1)
    ).key(5)


def test_bad_hashes_and_prefixes() -> None:
    ks = Keyspace(LAYOUT)
    with pytest.raises(HashTypeError, match="must be bytes or int, got str"):
        ks.key("abc")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"must have 1\.\.256 bytes, got 0"):
        ks.key(b"")
    with pytest.raises(InvalidArgumentError, match="must fit in 128 signed bits"):
        ks.key(1 << 127)
    with pytest.raises(InvalidArgumentError, match="without braces"):
        Keyspace(LAYOUT, prefix="{tag}")


def _value(ks: Keyspace, key: bytes, payload: bytes) -> bytes:
    return bytes(build_value(ks, key, memoryview(payload)))


def test_round_trip_and_header_fields() -> None:
    ks = Keyspace(LAYOUT)
    key = ks.key(b"h")
    payload = bytes(range(256)) * 3 + b"x" * 232
    value = _value(ks, key, payload)
    assert len(value) == HEADER_BYTES + 1000 == 1048
    magic, version, hlen, digest, tag, length, checksum = struct.unpack_from("<4sHH16sQQQ", value)
    assert (magic, version, hlen, digest, length) == (b"KVRB", 1, 48, LAYOUT.digest(), 1000)
    assert tag == xxhash.xxh3_64_intdigest(key)
    assert checksum == xxhash.xxh3_64_intdigest(payload)
    assert bytes(decode(value, ks, key)) == payload


def _kind(value: bytes, ks: Keyspace, key: bytes) -> str:
    with pytest.raises(Rejected) as info:
        decode(value, ks, key)
    return info.value.kind


def test_rejected_values_name_what_is_wrong() -> None:
    ks = Keyspace(LAYOUT)
    key = ks.key(b"h")
    good = _value(ks, key, b"p" * 1000)
    flipped = bytearray(good)
    flipped[HEADER_BYTES + 500] ^= 1
    assert _kind(bytes(flipped), ks, key) == "corrupt"
    assert _kind(good + b"!", ks, key) == "corrupt"
    assert _kind(good[:-1], ks, key) == "truncated"
    assert _kind(good[:HEADER_BYTES], ks, key) == "truncated"
    assert _kind(good[:20], ks, key) == "truncated"
    assert _kind(b"hello world, not ours", ks, key) == "foreign"
    assert _kind(b"\x00" * 2000, ks, key) == "foreign"
    # Another layout's value, and a value moved under another key.
    other = Keyspace(dataclasses.replace(LAYOUT, model="m2"))
    assert _kind(_value(other, other.key(b"h"), b"p" * 1000), ks, key) == "foreign"
    assert _kind(good, ks, ks.key(b"g")) == "foreign"
    # A future format version is not guessed at.
    future = bytearray(good)
    struct.pack_into("<H", future, 4, 2)
    assert _kind(bytes(future), ks, key) == "foreign"
