"""The value types: frozen, compared by value, printable, picklable; and the batched input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from kvoff import LoadStoreSpec, OffloadingEvent, OffloadingManager, PrepareStoreOutput


def test_load_store_spec_is_a_read_only_value() -> None:
    spec = LoadStoreSpec([3, 1, 2])
    assert spec.medium == "CPU" and len(spec) == 3
    assert spec.block_ids.dtype == np.int64
    assert spec.block_ids.tolist() == [3, 1, 2]
    assert repr(spec) == "LoadStoreSpec(block_ids=[3, 1, 2], medium='CPU')"
    assert spec == LoadStoreSpec(np.array([3, 1, 2]))
    assert spec != LoadStoreSpec([3, 1])
    assert spec != LoadStoreSpec([3, 1, 2], medium="GPU")
    assert spec != [3, 1, 2]
    with pytest.raises(ValueError, match="read-only"):
        spec.block_ids[0] = 9
    with pytest.raises(AttributeError):
        spec.medium = "GPU"
    with pytest.raises(TypeError, match="unhashable"):
        hash(spec)


def test_prepare_store_output_and_event() -> None:
    out = PrepareStoreOutput([b"a", 2], LoadStoreSpec([0, 1]), [b"z"])
    assert out.block_hashes_to_store == [b"a", 2]
    assert out.store_spec == LoadStoreSpec([0, 1])
    assert out.block_hashes_evicted == [b"z"]
    assert repr(out) == (
        "PrepareStoreOutput(block_hashes_to_store=[b'a', 2], "
        "store_spec=LoadStoreSpec(block_ids=[0, 1], medium='CPU'), block_hashes_evicted=[b'z'])"
    )
    assert out != PrepareStoreOutput([b"a", 2], LoadStoreSpec([0, 1]), [])
    assert out != PrepareStoreOutput([b"a", 2], LoadStoreSpec([1, 0]), [b"z"])
    ev = OffloadingEvent([b"a"], 16, "CPU", True)
    assert (ev.block_hashes, ev.block_size, ev.medium, ev.removed) == ([b"a"], 16, "CPU", True)
    assert (
        repr(ev)
        == "OffloadingEvent(block_hashes=[b'a'], block_size=16, medium='CPU', removed=True)"
    )
    assert ev != OffloadingEvent([b"a"], 16, "CPU", False)
    assert ev != OffloadingEvent([b"a"], 32, "CPU", True)
    with pytest.raises(AttributeError):
        ev.removed = False


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_value_types_pickle(protocol: int) -> None:
    m = OffloadingManager(2, block_size=32, enable_events=True)
    out = m.prepare_store([b"a", 2**70])
    assert out is not None
    m.complete_store([b"a", 2**70])
    out2 = m.prepare_store([b"b"])
    assert out2 is not None
    values = [out, out2, out.store_spec, m.prepare_load([2**70]), *m.take_events()]
    for v in values:
        back = pickle.loads(pickle.dumps(v, protocol=protocol))
        assert type(back) is type(v)
        assert back == v
        assert repr(back) == repr(v)
    assert pickle.loads(pickle.dumps(out2)).block_hashes_evicted == [b"a"]


def test_manager_refuses_to_pickle() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(OffloadingManager(1))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_batched_numpy_input_matches_list_input(dtype: type) -> None:
    ints = [5, 9, 2**62, 0]
    m = OffloadingManager(4, policy="arc")
    out = m.prepare_store(np.array(ints[:3], dtype=dtype))
    assert out is not None
    # The batched form answers in kind: an array of the input's dtype.
    assert isinstance(out.block_hashes_to_store, np.ndarray)
    assert out.block_hashes_to_store.dtype == dtype
    assert out.block_hashes_to_store.tolist() == ints[:3]
    assert out.store_spec == LoadStoreSpec([0, 1, 2])
    m.complete_store(np.array(ints[:3], dtype=dtype))
    # The same hashes as Python ints are the same keys.
    assert m.lookup(ints) == 3
    assert m.lookup(np.array(ints, dtype=dtype)) == 3
    # Strided arrays work too.
    assert m.lookup(np.array([5, -1, 9, -1], dtype=np.int64)[::2]) == 2
    assert m.prepare_load(np.array([9, 5], dtype=dtype)) == LoadStoreSpec([1, 0])
    m.touch(np.array([2**62], dtype=dtype))
    assert m.policy_state()["t2"] == [2**62]


def test_uint64_and_negative_keys_are_distinct() -> None:
    m = OffloadingManager(2)
    m.prepare_store(np.array([2**64 - 1], dtype=np.uint64))
    m.prepare_store(np.array([-1], dtype=np.int64))
    assert m.block_id(2**64 - 1) == 0 and m.block_id(-1) == 1


def test_tuples_and_iterables_are_accepted() -> None:
    m = OffloadingManager(4)
    m.prepare_store((b"a", b"b"))
    m.complete_store(h for h in [b"a", b"b"])
    assert m.lookup(iter([b"a", b"b"])) == 2
    assert m.prepare_store([]) == PrepareStoreOutput([], LoadStoreSpec([]), [])
    assert m.lookup([]) == 0


def test_properties_and_repr() -> None:
    m = OffloadingManager(8, block_size=32, policy="arc")
    assert (m.capacity, m.free, m.resident, m.pinned, m.block_size, m.policy) == (
        8,
        8,
        0,
        0,
        32,
        "arc",
    )
    m.prepare_store([1, 2, 3])
    assert (m.free, m.resident, m.pinned, len(m)) == (5, 3, 3, 3)
    assert (
        repr(m)
        == "OffloadingManager(num_blocks=8, block_size=32, policy='arc', resident=3, pinned=3)"
    )
    with pytest.raises(AttributeError):
        m.capacity = 3


class Digest(bytes):
    """A bytes subclass, as a caller's own hash type might be."""


def test_evictions_hand_back_equal_plain_hashes() -> None:
    # The manager keeps no reference to the caller's hash objects: an evicted hash comes back
    # as a new bytes or int equal to the one stored, whatever its type was.
    m = OffloadingManager(3)
    digest = Digest(bytes([1] * 32))
    m.prepare_store([digest, True, 2**100])
    m.complete_store([digest, True, 2**100])
    out = m.prepare_store(np.array([7, 8, 9], dtype=np.int64))
    assert out is not None
    assert out.block_hashes_evicted == [bytes([1] * 32), 1, 2**100]
    assert [type(h) for h in out.block_hashes_evicted] == [bytes, int, int]
    m.complete_store([7, 8, 9])
    out = m.prepare_store([b"c"])
    # A hash that came in an array comes back as a plain int too.
    assert out is not None and out.block_hashes_evicted == [7]
    assert type(out.block_hashes_evicted[0]) is int


def test_hashes_to_store_are_the_callers_own_objects() -> None:
    m = OffloadingManager(4)
    digest = Digest(b"d" * 32)
    out = m.prepare_store([b"a", digest, True])
    assert out is not None
    assert out.block_hashes_to_store[1] is digest and out.block_hashes_to_store[2] is True
