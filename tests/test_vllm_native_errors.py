"""Bad input to ``kvoff._core.VllmOffloadingManager`` gets a ``kvoff.errors`` error naming the
problem and leaves the tier as it was. Needs only the extension: the value classes vLLM would
hand in are plain stand-ins, and the request context is a small class with ``ReqContext``'s
four methods (the binding only calls those)."""

from __future__ import annotations

from typing import Any

import pytest

from kvoff._core import VllmOffloadingManager
from kvoff.errors import HashTypeError, InvalidArgumentError, InvalidStateError, UnknownHashError

MISS, HIT, HIT_PENDING = "MISS", "HIT", "HIT_PENDING"
CTX = r"^ctx must be vLLM's ReqContext \(with get_state / set_state\), got "


class Context:
    """The four methods of vLLM's ``ReqContext`` the manager calls."""

    def __init__(self, positions: dict[bytes, int] | None = None) -> None:
        self._state: dict[type, Any] = {}
        self._positions = positions or {}

    def get_state(self, cls: type) -> Any:
        return self._state.get(cls)

    def set_state(self, val: Any) -> None:
        self._state[type(val)] = val

    def get_offload_key_position(self, key: bytes) -> int | None:
        return self._positions.get(key)


class Spec:
    """Stands in for ``CPULoadStoreSpec``: the binding makes it with ``__new__`` and sets its
    ``block_ids``."""

    block_ids: Any

    def __eq__(self, ids: object) -> bool:
        return bool(self.block_ids.tolist() == ids)


def key(name: str) -> bytes:
    return name.encode() + (0).to_bytes(4, "big")


def make(num_chunks: int = 4, policy: str = "lru", events: bool = True) -> VllmOffloadingManager:
    return VllmOffloadingManager(
        num_chunks,
        policy,
        events,
        0,
        64_000,
        (MISS, HIT, HIT_PENDING),
        Spec,
        lambda keys, spec, evicted: (list(keys), spec, list(evicted)),
        lambda keys, medium, removed, metadata_only=False: (list(keys), removed, metadata_only),
        "CPU",
    )


def stored(m: VllmOffloadingManager, *names: str) -> Context:
    ctx = Context()
    out = m.prepare_store([key(n) for n in names], ctx)
    assert out is not None
    m.complete_store(out[0], ctx)
    return ctx


def state(m: VllmOffloadingManager) -> tuple[Any, ...]:
    """What a refused call must leave as it was."""
    return (len(m), m.pinned, [key(n) in m for n in "abcxyz"], m.arc_target)


@pytest.mark.parametrize("policy", ["lru", "arc"])
def test_a_key_that_is_not_bytes_is_a_hash_type_error(policy: str) -> None:
    m = make(policy=policy)
    ctx = stored(m, "a")
    before = state(m)
    with pytest.raises(HashTypeError, match="an OffloadKey must be bytes, got int"):
        m.prepare_store([key("b"), 5], ctx)
    with pytest.raises(HashTypeError, match="an OffloadKey must be bytes, got str"):
        m.prepare_load([key("a"), "a"], ctx)
    with pytest.raises(HashTypeError, match="an OffloadKey must be bytes, got bytearray"):
        m.complete_store([bytearray(key("a"))], ctx)
    with pytest.raises(HashTypeError, match="an OffloadKey must be bytes, got int"):
        m.lookup(7, ctx)
    with pytest.raises(HashTypeError, match="an OffloadKey must be bytes, got NoneType"):
        _ = None in m
    with pytest.raises(
        HashTypeError,
        match="keys must be an iterable of OffloadKey bytes, got int",
    ):
        m.complete_load(3, ctx)
    assert state(m) == before
    assert m.lookup(key("a"), ctx) == HIT


def test_a_context_without_req_context_methods_is_refused() -> None:
    m = make()
    stored(m, "a")
    before = state(m)
    with pytest.raises(InvalidArgumentError, match=CTX + "int"):
        m.prepare_store([key("b")], 3)
    with pytest.raises(InvalidArgumentError, match=CTX + "str"):
        m.prepare_load([key("a")], "ctx")
    with pytest.raises(InvalidArgumentError, match=CTX + "dict"):
        m.on_request_finished({})
    assert state(m) == before


def test_success_must_be_a_bool() -> None:
    m = make()
    ctx = Context()
    out = m.prepare_store([key("a")], ctx)
    assert out is not None
    with pytest.raises(InvalidArgumentError, match="success must be a bool, got str"):
        m.complete_store([key("a")], ctx, "yes")
    assert m.lookup(key("a"), ctx) == HIT_PENDING  # still in flight
    m.complete_store([key("a")], ctx, success=False)
    assert key("a") not in m


@pytest.mark.parametrize("policy", ["lru", "arc"])
def test_loading_an_unknown_key_names_it_and_pins_nothing(policy: str) -> None:
    m = make(policy=policy)
    ctx = stored(m, "a", "b")
    before = state(m)
    with pytest.raises(UnknownHashError, match=r"^unknown block hash 7a \(group 0\)$"):
        m.prepare_load([key("a"), key("z")], ctx)
    assert state(m) == before
    assert m.pinned == 0
    # a is still evictable: a full tier can make room with it.
    assert m.prepare_store([key("x"), key("y"), key("c")], Context()) is not None


def test_loading_a_key_whose_store_is_in_flight_is_refused() -> None:
    m = make()
    ctx = Context()
    assert m.prepare_store([key("a")], ctx) is not None
    with pytest.raises(InvalidStateError, match=r"OffloadKey 61 \(group 0\) is not ready"):
        m.prepare_load([key("a")], ctx)
    assert m.pinned == 1  # the store's pin only
    assert m.lookup(key("a"), ctx) == HIT_PENDING


def test_completing_unknown_or_finished_loads_is_refused_and_keeps_the_pins() -> None:
    m = make()
    ctx = stored(m, "a", "b")
    assert m.prepare_load([key("a"), key("b")], ctx) == [0, 1]
    with pytest.raises(UnknownHashError, match=r"^unknown block hash 7a \(group 0\)$"):
        m.complete_load([key("a"), key("z")], ctx)
    assert m.pinned == 2
    m.complete_load([key("a"), key("b")], ctx)
    assert m.pinned == 0
    with pytest.raises(InvalidStateError, match=r"OffloadKey 61 \(group 0\) is not being loaded"):
        m.complete_load([key("a")], ctx)
    # A key listed twice needs two loads in flight.
    m.prepare_load([key("b")], ctx)
    with pytest.raises(InvalidStateError, match=r"OffloadKey 62 \(group 0\) is not being loaded"):
        m.complete_load([key("b"), key("b")], ctx)
    assert m.pinned == 1


def test_a_second_complete_store_changes_nothing() -> None:
    m = make()
    ctx = stored(m, "a")
    assert m.take_events() == [([key("a")], False, False)]
    m.complete_store([key("a")], ctx)
    m.complete_store([key("a")], ctx, success=False)
    assert m.take_events() == []
    assert m.lookup(key("a"), ctx) == HIT


def test_a_finished_request_offering_new_keys_is_refused_and_nothing_changes() -> None:
    m = make(policy="arc")
    ctx = stored(m, "a")
    m.on_request_finished(ctx)
    before = state(m)
    with pytest.raises(InvalidStateError, match="offered or loaded new keys after it finished"):
        m.prepare_store([key("a"), key("b")], ctx)
    assert state(m) == before
    assert key("b") not in m
    assert m.take_usage()[3] == [1]  # only the first store's allocation


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_chunks", -1, "num_chunks must be between 0 and 4294967295, got -1"),
        ("policy", "fifo", "policy must be 'lru' or 'arc', got \"fifo\""),
        ("store_threshold", -2, "store_threshold must be >= 0, got -2"),
    ],
)
def test_bad_construction_arguments_name_the_field(field: str, value: object, message: str) -> None:
    args: dict[str, Any] = {"num_chunks": 4, "policy": "lru", "store_threshold": 0}
    args[field] = value
    with pytest.raises(InvalidArgumentError) as err:
        VllmOffloadingManager(
            args["num_chunks"],
            args["policy"],
            True,
            args["store_threshold"],
            64_000,
            (MISS, HIT, HIT_PENDING),
            list,
            tuple,
            tuple,
            "CPU",
        )
    assert str(err.value) == message


def test_events_keep_their_order_and_stored_keys_are_the_callers_objects() -> None:
    m = make(num_chunks=2)
    ctx = Context()
    a, b, c = (bytes(key(n)) for n in "abc")
    out = m.prepare_store([a, b], ctx)
    assert out is not None and out[0][0] is a  # the offered objects come back
    m.complete_store([a], ctx)
    m.complete_store([b], ctx, success=False)
    out = m.prepare_store([c, b], Context())  # evicts a
    assert out is not None
    m.complete_store(out[0], ctx)
    events = m.take_events()
    # b's failed-store removal is dropped at the drain: b was stored again since.
    assert events == [([a], False, False), ([a], True, False), ([c, b], False, False)]
    assert events[0][0][0] is a and events[2][0][0] is c
    # Events off: completions keep nothing for them.
    quiet = make(num_chunks=2, events=False)
    quiet.prepare_store([a], ctx)
    quiet.complete_store([a], ctx)
    assert quiet.take_events() == []
