"""Fuzz the stats doors: whatever ``from_dict`` / ``from_bytes`` / the constructor and
the accumulator's methods are given, and whatever they let in, every method afterwards
(``reduce``, ``aggregate``, ``to_dict``, ``to_bytes``, pickle, ``kvoff.format_stats``, the
exporter's ``observe`` and a scrape) either works or raises a ``KvoffError``: never a panic, an
``OverflowError``, a ``TypeError`` or a ``UnicodeEncodeError``.

Inputs are mostly almost-valid (a v1 snapshot with counts near 2^64, whose sums pass 2^64) with
adversarial edits: wrong types, bools, negative or oversized ints, odd keys (lone surrogates,
non-str), missing or extra keys, wrong list lengths, corrupted encodings.

The ``stats-fuzz`` profile keeps CI at a few seconds; ``KVOFF_FUZZ_EXAMPLES=5000`` runs longer.
"""

from __future__ import annotations

import copy
import os
import pickle
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

import kvoff
from _stats_model import DIRECTIONS, ERROR_KINDS, empty_dict
from kvoff import KvoffError, OffloadingConnectorStats, StatsAccumulator
from kvoff.metrics import OffloadPromMetrics

settings.register_profile(
    "stats-fuzz",
    max_examples=int(os.environ.get("KVOFF_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("stats-fuzz")

U64_MAX = 2**64 - 1
NUM_COUNTERS = 126

# --- values --------------------------------------------------------------------------------

valid_counts = st.one_of(
    st.integers(0, U64_MAX),
    st.sampled_from([0, 1, 2**32, 2**63 - 1, 2**63, U64_MAX - 1, U64_MAX]),
    st.integers(U64_MAX - 64, U64_MAX),
)
surrogate_text = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
# Ints no u64 holds, up to ones Python refuses to print (more than 4300 digits).
out_of_range_ints = st.one_of(
    st.integers(-(2**70), -1),
    st.integers(2**64, 2**200),
    # Built at draw time: hypothesis itself reprs the values of a sampled_from.
    st.tuples(st.sampled_from([(2, 64), (10, 400), (10, 5000)]), st.sampled_from([1, -1])).map(
        lambda t: t[1] * t[0][0] ** t[0][1]
    ),
)
odd_scalars = st.one_of(
    st.booleans(),
    st.none(),
    out_of_range_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    surrogate_text,
    st.binary(max_size=5),
)
odd_values = st.recursive(
    odd_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=6,
)
odd_keys = st.one_of(
    st.text(max_size=8),
    surrogate_text,
    st.integers(),
    st.none(),
    st.tuples(st.integers(), st.text(max_size=2)),
    st.binary(max_size=4),
    st.frozensets(st.integers(), max_size=2),
)


@st.composite
def near_valid_dicts(draw: st.DrawFn) -> dict[Any, Any]:
    """A v2 dict (or its v1 form) whose every count is a u64 (often near 2^64), then a few
    adversarial edits."""
    d: dict[Any, Any] = empty_dict()
    for t in d["transfers"].values():
        for key, value in t.items():
            if isinstance(value, list):
                t[key] = draw(st.lists(valid_counts, min_size=len(value), max_size=len(value)))
            else:
                t[key] = draw(valid_counts)
    for section in ("lookups", "manager"):
        for key in d[section]:
            d[section][key] = draw(valid_counts)
    for counts in (*d["hits"].values(), d["remote"]["lookups"], d["remote"]["errors"]):
        for key in counts:
            counts[key] = draw(valid_counts)
    d["remote"]["writes_dropped"] = draw(valid_counts)
    d["remote"]["write_queue_blocks"] = draw(valid_counts)
    if draw(st.booleans()):  # the version-1 form, still read
        d["version"] = 1
        for key in ("hits", "remote"):
            del d[key]
        for direction in ("CPU_to_REMOTE", "REMOTE_to_CPU"):
            del d["transfers"][direction]
    for _ in range(draw(st.integers(0, 3))):
        edit(draw, d)
    return d


def containers(d: dict[Any, Any]) -> list[dict[Any, Any] | list[Any]]:
    out: list[dict[Any, Any] | list[Any]] = [d]
    for v in d.values():
        if isinstance(v, dict):
            out.extend(containers(v))
        elif isinstance(v, list):
            out.append(v)
    return out


def edit(draw: st.DrawFn, d: dict[Any, Any]) -> None:
    target = draw(st.sampled_from(containers(d)))
    kind = draw(st.sampled_from(["replace", "delete", "add", "tuple", "resize"]))
    if isinstance(target, list):
        if not target:
            return
        i = draw(st.integers(0, len(target) - 1))
        if kind == "resize":
            target.append(draw(valid_counts)) if draw(st.booleans()) else target.pop(i)
        else:
            target[i] = draw(st.one_of(odd_values, valid_counts, out_of_range_ints))
        return
    if kind == "add":
        target[draw(odd_keys)] = draw(st.one_of(valid_counts, odd_values))
        return
    if not target:
        return
    key = draw(st.sampled_from(sorted(target, key=repr)))
    if kind == "delete":
        del target[key]
    elif kind == "tuple" and isinstance(target[key], list):
        target[key] = tuple(target[key])
    else:
        target[key] = draw(st.one_of(odd_values, valid_counts, out_of_range_ints))


@st.composite
def encodings(draw: st.DrawFn) -> object:
    counters = draw(st.lists(valid_counts, min_size=NUM_COUNTERS, max_size=NUM_COUNTERS))
    blob = bytearray(b"KVOS" + struct.pack("<I", 1) + struct.pack(f"<{NUM_COUNTERS}Q", *counters))
    corrupt = draw(st.sampled_from(["none", "none", "truncate", "extend", "magic", "version"]))
    if corrupt == "truncate":
        del blob[draw(st.integers(0, len(blob) - 1)) :]
    elif corrupt == "extend":
        blob += draw(st.binary(min_size=1, max_size=9))
    elif corrupt == "magic":
        blob[draw(st.integers(0, 3))] ^= 0x20
    elif corrupt == "version":
        blob[4:8] = struct.pack("<I", draw(st.integers(0, 2**32 - 1)))
    form = draw(st.sampled_from([bytes, bytearray, memoryview]))
    return form(bytes(blob))


blobs = st.one_of(encodings(), st.binary(max_size=64), odd_values)

# --- what every accepted snapshot must survive ----------------------------------------------


def tolerate(call: Callable[..., object], *args: object, **kwargs: object) -> object:
    """Run ``call(*args, **kwargs)``; a ``KvoffError`` is an acceptable answer, any other
    exception (PyO3's PanicException is a BaseException) fails the test with its type."""
    try:
        return call(*args, **kwargs)
    except KvoffError:
        return None
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__module__}.{type(exc).__name__}: {exc}") from exc


def consume(stats: object) -> None:
    """The Python consumers, which also take the raw dict."""
    tolerate(lambda: kvoff.format_stats(stats))
    registry = CollectorRegistry()
    exporter = OffloadPromMetrics(registry=registry, vllm_compatible=True, engines=("0",))
    # Twice: the exporter's totals then pass 2^64 whenever the counts are near it.
    tolerate(lambda: exporter.observe(stats, engine="0"))
    tolerate(lambda: exporter.observe(stats, engine="0"))
    scrape = tolerate(lambda: generate_latest(registry))
    assert isinstance(scrape, bytes) and b"kvoff_transfer_bytes_total" in scrape


def every_method(s: OffloadingConnectorStats, other: OffloadingConnectorStats) -> None:
    reduced = s.reduce()
    for key, value in reduced.items():
        assert type(value) in (int, float), key
        assert value == value and value >= 0, key  # finite floats checked below
        if type(value) is float:
            assert value != float("inf"), key
    d = s.to_dict()
    assert OffloadingConnectorStats.from_dict(d) == s
    assert OffloadingConnectorStats.from_bytes(s.to_bytes()) == s
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.deepcopy(s) == s
    repr(s)
    s.is_empty()
    consume(s)
    total = copy.copy(s)
    if tolerate(lambda: total.aggregate(other)) is None:
        assert total.to_dict() == d, "a refused aggregate changed the snapshot"
    else:
        total.reduce()
        kvoff.format_stats(total)
    total.clone_and_reset().reduce()
    # Cumulative totals never refuse: counters saturate, gauges take the interval's values.
    running = copy.copy(s)
    running.accumulate(other).accumulate(other)
    running.reduce()
    kvoff.format_stats(running)
    for direction in kvoff.Direction.ALL:
        assert running.direction(direction).ops >= s.direction(direction).ops


def load(call: Callable[[], OffloadingConnectorStats]) -> OffloadingConnectorStats | None:
    result = tolerate(call)
    assert result is None or isinstance(result, OffloadingConnectorStats)
    return result


# --- the tests ------------------------------------------------------------------------------


@FUZZ
@given(near_valid_dicts(), near_valid_dicts())
def test_from_dict_then_every_method(data: dict[Any, Any], other_data: dict[Any, Any]) -> None:
    s = load(lambda: OffloadingConnectorStats.from_dict(data))
    constructed = load(lambda: OffloadingConnectorStats(data))
    assert (s is None) == (constructed is None) and s == constructed
    consume(data)
    other = load(lambda: OffloadingConnectorStats.from_dict(other_data))
    if s is not None:
        every_method(s, other if other is not None else s)


@FUZZ
@given(blobs, encodings())
def test_from_bytes_then_every_method(blob: object, other_blob: object) -> None:
    s = load(lambda: OffloadingConnectorStats.from_bytes(blob))  # type: ignore[arg-type]
    if isinstance(blob, (bytes, bytearray, memoryview)):
        constructed = load(lambda: OffloadingConnectorStats(blob))  # type: ignore[arg-type]
        assert s == constructed
    other = load(lambda: OffloadingConnectorStats.from_bytes(other_blob))  # type: ignore[arg-type]
    if s is not None:
        every_method(s, other if other is not None else s)


arguments = st.one_of(valid_counts, odd_scalars, st.floats(0, 86_400))
directions = st.one_of(st.sampled_from([*DIRECTIONS, "store", "load"]), odd_scalars)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("record_transfer"), directions, arguments, arguments, arguments),
            st.tuples(st.just("record_lookup"), arguments, arguments, arguments, arguments),
            st.tuples(st.just("record_stored"), arguments),
            st.tuples(st.just("record_evicted"), arguments),
            st.tuples(st.just("set_occupancy"), arguments, arguments, arguments),
            st.tuples(st.just("record_hits"), arguments, arguments, arguments, arguments),
            st.tuples(st.just("record_remote_lookup"), arguments, arguments),
            st.tuples(
                st.just("record_remote_error"),
                st.one_of(st.sampled_from([*ERROR_KINDS, "eof"]), odd_scalars),
                arguments,
            ),
            st.tuples(st.just("record_writes_dropped"), arguments),
            st.tuples(st.just("set_write_queue"), arguments),
        ),
        max_size=8,
    )
)
def test_accumulator_methods_then_every_method(calls: list[tuple[Any, ...]]) -> None:
    acc = StatsAccumulator()
    for name, *args in calls:
        if name == "record_transfer":
            direction, num_bytes, seconds, num_blocks = args
            tolerate(acc.record_transfer, direction, num_bytes, seconds, num_blocks=num_blocks)
        else:
            tolerate(getattr(acc, name), *args)
    s = acc.take()
    every_method(s, s)
