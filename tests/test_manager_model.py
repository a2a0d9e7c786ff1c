"""The Rust manager and the pure-Python reference model, driven side by side by hypothesis:
every result, every error (class and message) and the full observable state must agree."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kvoff import KvoffError, OffloadingManager
from manager_helpers import snapshot
from reference_manager import ReferenceManager

# A small universe so calls keep colliding: bytes and ints, including look-alikes
# (5 and b"\x05"), the empty hash, long hashes, and ints beyond 64 bits.
KEYS: list[bytes | int] = [
    b"a", b"b", b"\x05", b"", b"y" * 80, 0, 5, -1, 2**64 + 3, -(2**100),
]  # fmt: skip

key_lists = st.lists(st.sampled_from(KEYS), max_size=6)
# Mostly distinct lists, so that most calls get past validation.
distinct_key_lists = st.lists(st.sampled_from(KEYS), max_size=6, unique=True)
some_keys = st.one_of(distinct_key_lists, distinct_key_lists, key_lists)


def outcome(f: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", f())
    except KvoffError as e:
        return (type(e).__name__, str(e))


class ManagerComparison(RuleBasedStateMachine):
    rust: OffloadingManager
    model: ReferenceManager

    @initialize(
        num_blocks=st.integers(1, 5),
        policy=st.sampled_from(["lru", "arc"]),
        block_size=st.sampled_from([1, 16]),
    )
    def create(self, num_blocks: int, policy: str, block_size: int) -> None:
        self.rust = OffloadingManager(num_blocks, block_size, policy, enable_events=True)
        self.model = ReferenceManager(num_blocks, block_size, policy, enable_events=True)

    def both(self, name: str, *args: Any) -> None:
        got = outcome(lambda: getattr(self.rust, name)(*args))
        want = outcome(lambda: getattr(self.model, name)(*args))
        assert got == want, f"{name}{args}"

    @rule(keys=some_keys)
    def lookup(self, keys: list[Any]) -> None:
        self.both("lookup", keys)

    @rule(keys=some_keys)
    def prepare_load(self, keys: list[Any]) -> None:
        self.both("prepare_load", keys)

    @rule(keys=some_keys)
    def complete_load(self, keys: list[Any]) -> None:
        self.both("complete_load", keys)

    @rule(keys=some_keys)
    def touch(self, keys: list[Any]) -> None:
        self.both("touch", keys)

    @rule(keys=some_keys)
    def prepare_store(self, keys: list[Any]) -> None:
        self.both("prepare_store", keys)

    @rule(keys=some_keys, success=st.booleans())
    def complete_store(self, keys: list[Any], success: bool) -> None:
        self.both("complete_store", keys, success)

    # Compound rules reach the interesting states (full tier, T2 populated, ghosts touched)
    # in fewer steps than the single calls alone.
    @rule(keys=distinct_key_lists)
    def store_and_complete(self, keys: list[Any]) -> None:
        self.both("prepare_store", keys)
        self.both("complete_store", [k for k in keys if k in self.model], True)

    @rule(keys=distinct_key_lists)
    def touch_twice(self, keys: list[Any]) -> None:
        self.both("touch", keys)
        self.both("touch", keys[::-1])

    @rule()
    def take_events(self) -> None:
        self.both("take_events")

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "rust"):
            assert snapshot(self.rust, KEYS) == snapshot(self.model, KEYS)
            assert self.rust.free + self.rust.resident == self.rust.capacity


ManagerComparison.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_manager_matches_reference = ManagerComparison.TestCase


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("KVOFF_SLOW_TESTS"), reason="long run; set KVOFF_SLOW_TESTS=1"
)
def test_manager_matches_reference_long() -> None:
    run = settings(
        max_examples=2000,
        stateful_step_count=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(ManagerComparison, settings=run)
