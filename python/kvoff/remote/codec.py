"""The value format: a 48-byte header, then the block's bytes.

Header (little-endian)::

    offset  size  field
    0       4     magic b"KVRB"
    4       2     format version (1)
    6       2     header length (48; a later version may append fields)
    8       16    layout digest (RemoteLayout.digest())
    24      8     key tag: XXH3-64 of the key the value was written under
    32      8     payload length in bytes
    40      8     XXH3-64 of the payload

Every field is checked before a payload byte is used. XXH3 (the ``xxhash`` package, the
reference C implementation's binding) hashes tens of GB/s on one core and releases the GIL on
large buffers, so checking costs a fraction of receiving the bytes; it catches torn and
corrupted values, not a forger (the store is trusted, as a shared cache must be).
"""

from __future__ import annotations

import struct
from typing import Final

import xxhash

from kvoff.remote.keys import Keyspace, key_tag

__all__ = ["HEADER_BYTES", "Rejected", "decode", "encode_header"]

MAGIC: Final = b"KVRB"
VERSION: Final = 1
_HEADER = struct.Struct("<4sHH16sQQQ")
HEADER_BYTES: Final = _HEADER.size

# Kinds of rejected values, as counted in RemoteStats.errors.
TRUNCATED: Final = "truncated"
FOREIGN: Final = "foreign"
CORRUPT: Final = "corrupt"


class Rejected(Exception):
    """A value that must not be used; ``kind`` is one of truncated / foreign / corrupt."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def encode_header(keyspace: Keyspace, key: bytes, payload: memoryview) -> bytes:
    return _HEADER.pack(
        MAGIC,
        VERSION,
        HEADER_BYTES,
        keyspace.digest,
        key_tag(key),
        payload.nbytes,
        xxhash.xxh3_64_intdigest(payload),
    )


def build_value(
    keyspace: Keyspace, key: bytes, payload: memoryview, out: bytearray | None = None
) -> memoryview:
    """Header and payload in one buffer (the one copy of a write); ``out`` may supply it."""
    if out is None:
        out = bytearray(HEADER_BYTES + payload.nbytes)
    view = memoryview(out)
    view[HEADER_BYTES:] = payload
    view[:HEADER_BYTES] = encode_header(keyspace, key, view[HEADER_BYTES:])
    return view


def decode(value: bytes | bytearray | memoryview, keyspace: Keyspace, key: bytes) -> memoryview:
    """The payload of ``value`` read under ``key``, or :class:`Rejected` naming what is wrong."""
    view = memoryview(value).cast("B")
    if view.nbytes < HEADER_BYTES:
        if view.nbytes >= 4 and bytes(view[:4]) != MAGIC:
            raise Rejected(FOREIGN, f"no kvoff header ({view.nbytes} bytes)")
        raise Rejected(TRUNCATED, f"{view.nbytes} bytes, shorter than the header")
    magic, version, header_len, digest, tag, length, checksum = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise Rejected(FOREIGN, "no kvoff header")
    if version != VERSION or header_len != HEADER_BYTES:
        raise Rejected(FOREIGN, f"format version {version} (header {header_len} bytes)")
    if digest != keyspace.digest:
        raise Rejected(FOREIGN, "written for another model or layout")
    if tag != key_tag(key):
        raise Rejected(FOREIGN, "written under another key")
    if length != keyspace.block_bytes:
        raise Rejected(
            FOREIGN, f"payload of {length} bytes, blocks here are {keyspace.block_bytes}"
        )
    payload = view[HEADER_BYTES:]
    if payload.nbytes < length:
        raise Rejected(TRUNCATED, f"{payload.nbytes} payload bytes, header says {length}")
    if payload.nbytes > length:
        raise Rejected(CORRUPT, f"{payload.nbytes} payload bytes, header says {length}")
    if xxhash.xxh3_64_intdigest(payload) != checksum:
        raise Rejected(CORRUPT, "payload checksum mismatch")
    return payload
