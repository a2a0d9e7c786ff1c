"""Every bad input: the error class, its exact message, and a state left exactly as it was."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from kvoff import (
    HashTypeError,
    InvalidArgumentError,
    InvalidStateError,
    KvoffError,
    UnknownHashError,
)
from manager_helpers import IMPLS, snapshot

PROBE: list[bytes | int] = [b"ready", b"loading", b"storing", b"x", 7, b"\x07"]


def prepared(impl: str, policy: str) -> Any:
    """ready: evictable; loading: one load in flight; storing: store in flight; one free block."""
    m = IMPLS[impl](4, policy=policy, enable_events=True)
    m.prepare_store([b"ready", b"loading"])
    m.complete_store([b"ready", b"loading"])
    m.prepare_load([b"loading"])
    m.prepare_store([b"storing"])
    m.take_events()
    return m


Call = Callable[[Any], object]

CASES: list[tuple[str, Call, type[KvoffError], str]] = [
    (
        "non-hash item",
        lambda m: m.prepare_store([b"x", 1.5]),
        HashTypeError,
        "block hash at position 1 must be bytes or int, got float: 1.5",
    ),
    (
        "str item",
        lambda m: m.lookup([b"ready", "ready"]),
        HashTypeError,
        "block hash at position 1 must be bytes or int, got str: 'ready'",
    ),
    (
        "bytearray item",
        lambda m: m.touch([bytearray(b"ready")]),
        HashTypeError,
        "block hash at position 0 must be bytes or int, got bytearray: bytearray(b'ready')",
    ),
    (
        "a single bytes instead of a list",
        lambda m: m.prepare_store(b"ready"),
        HashTypeError,
        "block hashes must be a sequence of bytes or int hashes, got a single bytes",
    ),
    (
        "not iterable",
        lambda m: m.lookup(None),
        HashTypeError,
        "block hashes must be a sequence of bytes or int hashes, or an int64/uint64 numpy "
        "array, got NoneType",
    ),
    (
        "float array",
        lambda m: m.prepare_store(np.array([1.0])),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 1-D array of float64",
    ),
    (
        "big-endian int64 array",
        lambda m: m.lookup(np.array([1, 2], dtype=">i8")),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 1-D array of big-endian int64; convert it with .astype(numpy.int64)",
    ),
    (
        "big-endian uint64 array",
        lambda m: m.prepare_store(np.array([1], dtype=">u8")),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 1-D array of big-endian uint64; convert it with .astype(numpy.uint64)",
    ),
    (
        "int32 array",
        lambda m: m.touch(np.array([1], dtype=np.int32)),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 1-D array of int32; convert it with .astype(numpy.int64)",
    ),
    (
        "0-d array",
        lambda m: m.prepare_load(np.array(5)),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 0-D array of int64; pass a list of hashes, or a 1-D array",
    ),
    (
        "0-d object array",
        lambda m: m.complete_load(np.array(b"ready", dtype=object)),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 0-D array of object; pass a list of hashes, or a 1-D array",
    ),
    (
        "2-d array",
        lambda m: m.complete_store(np.array([[1, 2]], dtype=np.int64)),
        HashTypeError,
        "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, "
        "got a 2-D array of int64; pass a list of hashes, or a 1-D array",
    ),
    (
        "object array item that is not a hash",
        lambda m: m.lookup(np.array([b"ready", 1.5], dtype=object)),
        HashTypeError,
        "block hash at position 1 must be bytes or int, got float: 1.5",
    ),
    (
        "complete_store with an int for success",
        lambda m: m.complete_store([b"storing"], success=0),
        InvalidArgumentError,
        "complete_store's success must be a bool, got int: 0",
    ),
    (
        "complete_store with None for success",
        lambda m: m.complete_store([b"storing"], success=None),
        InvalidArgumentError,
        "complete_store's success must be a bool, got NoneType: None",
    ),
    (
        "int too large",
        lambda m: m.prepare_store([b"x", 2**127]),
        InvalidArgumentError,
        f"int block hash {2**127} at position 1 is outside the 128-bit signed range "
        "[-2**127, 2**127 - 1]",
    ),
    (
        "int too small",
        lambda m: m.touch([-(2**127) - 1]),
        InvalidArgumentError,
        f"int block hash {-(2**127) - 1} at position 0 is outside the 128-bit signed range "
        "[-2**127, 2**127 - 1]",
    ),
    (
        "prepare_load of an unknown hash",
        lambda m: m.prepare_load([b"ready", b"x"]),
        UnknownHashError,
        "unknown block hash b'x' passed to prepare_load",
    ),
    (
        "prepare_load of a block not ready",
        lambda m: m.prepare_load([b"ready", b"storing"]),
        InvalidStateError,
        "block hash b'storing' is not ready (its store is in flight): cannot prepare_load it",
    ),
    (
        "complete_load with no load in flight",
        lambda m: m.complete_load([b"loading", b"ready"]),
        InvalidStateError,
        "complete_load of block hash b'ready', which has no load in flight",
    ),
    (
        "complete_load of a store in flight",
        lambda m: m.complete_load([b"storing"]),
        InvalidStateError,
        "complete_load of block hash b'storing', which has no load in flight",
    ),
    (
        "complete_load of an unknown hash",
        lambda m: m.complete_load([7]),
        UnknownHashError,
        "unknown block hash 7 passed to complete_load",
    ),
    (
        "complete_store of a hash never prepared",
        lambda m: m.complete_store([b"storing", b"\x07"]),
        UnknownHashError,
        "unknown block hash b'\\x07' passed to complete_store (never prepared, or already gone)",
    ),
    (
        "failed complete_store of a hash never prepared",
        lambda m: m.complete_store([b"storing", 7], success=False),
        UnknownHashError,
        "unknown block hash 7 passed to complete_store (never prepared, or already gone)",
    ),
    (
        "duplicate in prepare_store",
        lambda m: m.prepare_store([b"x", 7, b"x"]),
        InvalidArgumentError,
        "duplicate block hash b'x' in one prepare_store call",
    ),
    (
        "duplicate present hash in prepare_store",
        lambda m: m.prepare_store([b"ready", b"ready"]),
        InvalidArgumentError,
        "duplicate block hash b'ready' in one prepare_store call",
    ),
    (
        "duplicate in prepare_load",
        lambda m: m.prepare_load([b"ready", b"ready"]),
        InvalidArgumentError,
        "duplicate block hash b'ready' in one prepare_load call",
    ),
    (
        "duplicate in complete_load",
        lambda m: m.complete_load([b"loading", b"loading"]),
        InvalidArgumentError,
        "duplicate block hash b'loading' in one complete_load call",
    ),
    (
        "duplicate in complete_store",
        lambda m: m.complete_store([b"storing", b"storing"]),
        InvalidArgumentError,
        "duplicate block hash b'storing' in one complete_store call",
    ),
    (
        "duplicate in touch",
        lambda m: m.touch([7, b"ready", 7]),
        InvalidArgumentError,
        "duplicate block hash 7 in one touch call",
    ),
    (
        "duplicate in a batched array",
        lambda m: m.prepare_store(np.array([3, 3], dtype=np.uint64)),
        InvalidArgumentError,
        "duplicate block hash 3 in one prepare_store call",
    ),
    (
        "block_state of an unknown hash",
        lambda m: m.block_state(b"x"),
        UnknownHashError,
        "unknown block hash b'x'",
    ),
    (
        "block_id of an unknown hash",
        lambda m: m.block_id(7),
        UnknownHashError,
        "unknown block hash 7",
    ),
]


@pytest.mark.parametrize("policy", ["lru", "arc"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("call", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_call_raises_and_changes_nothing(
    impl: str, policy: str, call: Call, error: type[KvoffError], message: str
) -> None:
    m = prepared(impl, policy)
    before = snapshot(m, PROBE)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(m)
    assert snapshot(m, PROBE) == before
    assert m.take_events() == []


def test_error_classes_are_also_builtins() -> None:
    m = IMPLS["kvoff"](2)
    with pytest.raises(KeyError):
        m.prepare_load([b"nope"])
    with pytest.raises(ValueError):
        m.prepare_store([1, 1])
    with pytest.raises(TypeError):
        m.lookup([None])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_blocks": 0}, "num_blocks must be between 1 and 4294967294, got 0"),
        ({"num_blocks": -5}, "num_blocks must be between 1 and 4294967294, got -5"),
        ({"num_blocks": 2**32}, f"num_blocks must be between 1 and 4294967294, got {2**32}"),
        ({"num_blocks": 4, "block_size": 0}, "block_size must be positive, got 0"),
        (
            {"num_blocks": 4, "policy": "fifo"},
            'unknown eviction policy "fifo": expected "lru" or "arc"',
        ),
        (
            {"num_blocks": 4, "policy": "LRU"},
            'unknown eviction policy "LRU": expected "lru" or "arc"',
        ),
    ],
)
def test_bad_constructor_arguments(impl: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^{re.escape(message)}$"):
        IMPLS[impl](**kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_success_may_be_a_numpy_bool(impl: str) -> None:
    m = IMPLS[impl](4)
    m.prepare_store([b"a", b"b"])
    m.complete_store([b"a"], success=np.bool_(True))
    m.complete_store([b"b"], success=np.bool_(False))
    assert m.block_state(b"a") == 0 and b"b" not in m and m.pinned == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_a_1d_object_array_is_read_like_a_list(impl: str) -> None:
    m = IMPLS[impl](4)
    out = m.prepare_store(np.array([b"a", 7], dtype=object))
    assert out is not None and out.block_hashes_to_store == [b"a", 7]
    m.complete_store([b"a", 7])
    assert m.lookup(np.array([b"a", 7, b"c"], dtype=object)) == 2
