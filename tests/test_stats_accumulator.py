"""StatsAccumulator: exact placement, bad input, and no record lost or split by a racing take()."""

from __future__ import annotations

import pickle
import random
import sys
import threading
from collections.abc import Iterator

import pytest

from _stats_model import DIRECTIONS, Transfer, add_transfer, empty_dict, model
from kvoff import (
    Direction,
    InvalidArgumentError,
    InvalidStateError,
    OffloadingConnectorStats,
    StatsAccumulator,
)


def record(acc: StatsAccumulator, t: Transfer) -> None:
    acc.record_transfer(t.direction, t.num_bytes, t.seconds, t.success, t.num_blocks)


def test_every_bucket_edge_matches_the_reference() -> None:
    edges = [0, 1, 4096, 4097, 1_000_000, 1_000_001, 4_000_000_000, 4_000_000_001]
    durations = [0, 1, 10_000, 10_001, 1_000_000, 10_000_000_000, 10_000_000_001]
    transfers = [
        Transfer(d, size, ns, num_blocks=3)
        for d in DIRECTIONS
        for size in edges
        for ns in durations
    ]
    # Throughput exactly on bounds: 1e8 B/s (100 B in 1 µs), 1e10 B/s (1e9 B in 0.1 s).
    transfers += [
        Transfer("GPU_to_CPU", 100, 1_000),
        Transfer("GPU_to_CPU", 101, 1_000),
        Transfer("CPU_to_GPU", 1_000_000_000, 100_000_000),
        Transfer("CPU_to_GPU", 1_000_000_001, 100_000_000),
        Transfer("CPU_to_GPU", 777, 5, success=False, num_blocks=9),
    ]
    acc = StatsAccumulator()
    for t in transfers:
        record(acc, t)
    assert acc.take().to_dict() == model(transfers)
    assert acc.take().is_empty()


def test_defaults() -> None:
    acc = StatsAccumulator()
    acc.record_transfer(Direction.GPU_TO_CPU, 10, 1e-3)
    acc.record_transfer(Direction.CPU_TO_GPU, 20, 2e-3, num_blocks=2)
    d = acc.take().to_dict()["transfers"]
    assert (d["GPU_to_CPU"]["ops"], d["GPU_to_CPU"]["blocks"], d["GPU_to_CPU"]["bytes"]) == (
        1,
        0,
        10,
    )
    assert (d["CPU_to_GPU"]["ops"], d["CPU_to_GPU"]["blocks"], d["CPU_to_GPU"]["bytes"]) == (
        1,
        2,
        20,
    )


@pytest.mark.parametrize(("alias", "name"), [("store", "GPU_to_CPU"), ("load", "CPU_to_GPU")])
def test_the_store_and_load_aliases_are_refused(alias: str, name: str) -> None:
    acc = StatsAccumulator()
    acc.record_transfer(name, 5, 1e-3)
    with pytest.raises(InvalidArgumentError) as info:
        acc.record_transfer(alias, 10, 1e-3)
    assert str(info.value) == (
        f'unknown transfer direction "{alias}": expected one of "GPU_to_CPU", "CPU_to_GPU", '
        f'"CPU_to_REMOTE", "REMOTE_to_CPU" '
        f'(the alias "{alias}" is no longer accepted: write "{name}")'
    )
    # Nothing recorded by the refused call; the earlier record is intact.
    d = acc.take().direction(name)
    assert (d.ops, d.bytes) == (1, 5)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("sideways", 1, 0.1), {}, 'unknown transfer direction "sideways"'),
        (("GPU_to_CPU", -1, 0.1), {}, "num_bytes must be a non-negative int, got -1"),
        (("GPU_to_CPU", 1, 0.1), {"num_blocks": -2}, "num_blocks must be a non-negative int"),
        (("GPU_to_CPU", 1, float("nan")), {}, "finite, non-negative number of seconds, got NaN"),
        (("GPU_to_CPU", 1, float("inf")), {}, "got inf"),
        (("GPU_to_CPU", 1, -0.5), {}, "got -0.5"),
    ],
)
def test_bad_transfers_raise_and_record_nothing(
    args: tuple[str, int, float], kwargs: dict[str, int], message: str
) -> None:
    acc = StatsAccumulator()
    with pytest.raises(InvalidArgumentError, match=message):
        acc.record_transfer(*args, **kwargs)  # type: ignore[arg-type]
    assert acc.take().is_empty()


def test_lookups_and_manager_counters() -> None:
    acc = StatsAccumulator()
    acc.record_lookup(8, 3, 128, 48)
    acc.record_lookup(2, 2, 32, 32)
    acc.record_stored(5)
    acc.record_evicted(2)
    acc.record_allocation_failure()
    acc.set_occupancy(100, 40, 7)
    acc.set_occupancy(100, 41, 6)
    d = acc.take().to_dict()
    assert d["lookups"] == {
        "blocks_queried": 10,
        "blocks_hit": 5,
        "tokens_queried": 160,
        "tokens_hit": 80,
    }
    assert d["manager"] == {
        "blocks_stored": 5,
        "blocks_evicted": 2,
        "allocation_failures": 1,
        "capacity_blocks": 100,
        "resident_blocks": 41,
        "pinned_blocks": 6,
    }
    # Counts start over; gauges are latest values and stay.
    after = acc.take().to_dict()
    assert after["lookups"]["blocks_queried"] == 0
    assert after["manager"]["blocks_stored"] == 0
    assert after["manager"]["resident_blocks"] == 41


def test_bad_lookups_and_gauges_raise_and_change_nothing() -> None:
    acc = StatsAccumulator()
    acc.set_occupancy(10, 5, 1)
    with pytest.raises(InvalidArgumentError, match="cannot hit more than it queried"):
        acc.record_lookup(2, 3, 0, 0)
    with pytest.raises(InvalidArgumentError, match="cannot hit more than it queried"):
        acc.record_lookup(3, 2, 10, 11)
    with pytest.raises(InvalidArgumentError, match="tokens_hit must be a non-negative int"):
        acc.record_lookup(3, 2, 10, -1)
    with pytest.raises(InvalidArgumentError, match="pinned must be a non-negative int"):
        acc.set_occupancy(1, 1, -1)
    with pytest.raises(InvalidArgumentError, match="num_blocks must be a non-negative int"):
        acc.record_stored(-4)
    s = acc.take().to_dict()
    expected = empty_dict()
    expected["manager"].update(capacity_blocks=10, resident_blocks=5, pinned_blocks=1)
    assert s == expected


def test_accumulator_refuses_to_pickle() -> None:
    with pytest.raises(InvalidStateError, match="cannot be pickled"):
        pickle.dumps(StatsAccumulator())


@pytest.fixture
def fast_switching() -> Iterator[None]:
    # Make the interpreter switch threads often, so take() lands between records constantly.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("fast_switching")
def test_threads_racing_take_sum_exactly_to_what_was_recorded() -> None:
    acc = StatsAccumulator()
    n_threads, per_thread = 4, 5_000
    plans = []
    for seed in range(n_threads):
        rng = random.Random(seed)
        plans.append(
            [
                Transfer(
                    rng.choice(DIRECTIONS),
                    rng.choice([0, 4096, 4097, 10**6, rng.randrange(1, 5 * 10**9)]),
                    rng.choice([0, 10_000, 10_001, rng.randrange(1, 2 * 10**10)]),
                    success=rng.random() > 0.1,
                    num_blocks=rng.randrange(0, 64),
                )
                for _ in range(per_thread)
            ]
        )
    start = threading.Barrier(n_threads + 1)

    def writer(plan: list[Transfer]) -> None:
        start.wait()
        for i, t in enumerate(plan):
            record(acc, t)
            acc.record_lookup(3, 1, 48, 16)
            if i % 7 == 0:
                acc.record_stored(2)

    threads = [threading.Thread(target=writer, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    start.wait()
    snapshots = []
    while any(t.is_alive() for t in threads):
        snapshots.append(acc.take())
    for t in threads:
        t.join()
    snapshots.append(acc.take())

    total = OffloadingConnectorStats()
    for s in snapshots:
        d = s.to_dict()
        # Each snapshot holds whole records: a lookup's four counters are never split.
        assert d["lookups"]["blocks_queried"] == 3 * d["lookups"]["blocks_hit"]
        assert d["lookups"]["tokens_queried"] == 48 * d["lookups"]["blocks_hit"]
        total.aggregate(s)
    assert len(snapshots) > 10

    expected = empty_dict()
    for plan in plans:
        for transfer in plan:
            add_transfer(expected, transfer)
    calls = n_threads * per_thread
    expected["lookups"] = {
        "blocks_queried": 3 * calls,
        "blocks_hit": calls,
        "tokens_queried": 48 * calls,
        "tokens_hit": 16 * calls,
    }
    expected["manager"]["blocks_stored"] = 2 * n_threads * len(range(0, per_thread, 7))
    assert total.to_dict() == expected


# --- reliability: counters never wrap, absurd inputs are refused, arguments agree with the dict ---

U64_MAX = 2**64 - 1


def test_counters_saturate_at_2_64_minus_1_instead_of_wrapping() -> None:
    acc = StatsAccumulator()
    for n in (2**63, 2**62, 2**62):  # 2^64 in all: wrapping gave 0
        acc.record_stored(n)
    acc.record_evicted(U64_MAX)
    acc.record_evicted(5)
    acc.record_lookup(U64_MAX, 7, U64_MAX, U64_MAX)
    acc.record_lookup(1, 1, 1, 1)
    d = acc.take().to_dict()
    assert (d["manager"]["blocks_stored"], d["manager"]["blocks_evicted"]) == (U64_MAX, U64_MAX)
    assert d["lookups"] == {
        "blocks_queried": U64_MAX,
        "blocks_hit": 8,
        "tokens_queried": U64_MAX,
        "tokens_hit": U64_MAX,
    }
    # The next interval starts from zero again.
    acc.record_stored(2)
    assert acc.take().to_dict()["manager"]["blocks_stored"] == 2


def test_two_transfers_of_a_day_sum_exactly() -> None:
    acc = StatsAccumulator()
    acc.record_transfer("GPU_to_CPU", 2**50, 86_400.0)
    acc.record_transfer("GPU_to_CPU", 2**50, 86_400.0)
    t = acc.take().to_dict()["transfers"]["GPU_to_CPU"]
    assert (t["ops"], t["bytes"], t["time_ns"]) == (2, 2**51, 172_800_000_000_000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"seconds": 1e12},
            "transfer time must be at most 86400 seconds (one day) for one transfer, "
            "got 1000000000000",
        ),
        (
            {"seconds": 86_400.000_001},
            "transfer time must be at most 86400 seconds (one day) for one transfer, "
            "got 86400.000001",
        ),
        (
            {"num_bytes": 2**50 + 1},
            "num_bytes must be at most 2^50 (1 PiB) for one transfer, got 1125899906842625",
        ),
        (
            {"num_bytes": 2**63},
            "num_bytes must be at most 2^50 (1 PiB) for one transfer, got 9223372036854775808",
        ),
        (
            {"num_bytes": U64_MAX, "success": False},
            "num_bytes must be at most 2^50 (1 PiB) for one transfer, got 18446744073709551615",
        ),
        (
            {"num_bytes": 2**64},
            "num_bytes must be an int in 0..=2^64-1, got 18446744073709551616",
        ),
        (
            {"num_bytes": -(2**70)},
            "num_bytes must be a non-negative int, got -1180591620717411303424",
        ),
        (
            {"num_blocks": 2**64},
            "num_blocks must be an int in 0..=2^64-1, got 18446744073709551616",
        ),
        (
            {"seconds": 10**400},
            "seconds must be a number of seconds (int or float), got an int too large for a float",
        ),
    ],
)
def test_absurd_transfers_raise_naming_the_argument(
    kwargs: dict[str, object], message: str
) -> None:
    acc = StatsAccumulator()
    args: dict[str, object] = {"direction": "CPU_to_GPU", "num_bytes": 1, "seconds": 0.5}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError) as info:
        acc.record_transfer(**args)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert acc.take().is_empty()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seconds": True}, "seconds must be a number of seconds (int or float), got bool"),
        ({"seconds": "1"}, "seconds must be a number of seconds (int or float), got str"),
        ({"seconds": None}, "seconds must be a number of seconds (int or float), got NoneType"),
        ({"num_bytes": True}, "num_bytes must be an int, got bool"),
        ({"num_bytes": 1.0}, "num_bytes must be an int, got float"),
        ({"num_blocks": False}, "num_blocks must be an int, got bool"),
        ({"success": 1}, "success must be a bool, got int"),
        ({"direction": 0}, "direction must be a str, got int"),
        ({"direction": "\udcff"}, "direction must be a str of valid Unicode"),
    ],
)
def test_wrong_argument_types_raise_invalid_argument(
    kwargs: dict[str, object], message: str
) -> None:
    acc = StatsAccumulator()
    args: dict[str, object] = {"direction": "GPU_to_CPU", "num_bytes": 1, "seconds": 0.5}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError) as info:
        acc.record_transfer(**args)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert acc.take().is_empty()


def test_bools_are_refused_as_counts_everywhere() -> None:
    acc = StatsAccumulator()
    acc.set_occupancy(4, 2, 1)
    calls = [
        (lambda: acc.record_stored(True), "num_blocks must be an int, got bool"),  # type: ignore[arg-type]
        (lambda: acc.record_evicted(False), "num_blocks must be an int, got bool"),  # type: ignore[arg-type]
        (lambda: acc.record_lookup(True, 0, 0, 0), "blocks_queried must be an int, got bool"),  # type: ignore[arg-type]
        (lambda: acc.set_occupancy(True, 1, 1), "capacity must be an int, got bool"),  # type: ignore[arg-type]
    ]
    for call, message in calls:
        with pytest.raises(InvalidArgumentError, match=f"^{message}$"):
            call()
    expected = empty_dict()
    expected["manager"].update(capacity_blocks=4, resident_blocks=2, pinned_blocks=1)
    assert acc.take().to_dict() == expected


def test_numpy_integers_and_floats_are_still_accepted() -> None:
    np = pytest.importorskip("numpy")
    acc = StatsAccumulator()
    acc.record_transfer("GPU_to_CPU", np.int64(4096), np.float64(1e-3), True, np.uint64(2))
    acc.record_stored(np.int32(3))
    d = acc.take().to_dict()
    t = d["transfers"]["GPU_to_CPU"]
    assert (t["ops"], t["bytes"], t["blocks"], t["time_ns"]) == (1, 4096, 2, 1_000_000)
    assert d["manager"]["blocks_stored"] == 3


@pytest.mark.parametrize("gauges", [(1, 5, 9), (1, 2, 0), (10, 5, 6), (0, 0, 1)])
def test_set_occupancy_refuses_gauges_that_do_not_nest(gauges: tuple[int, int, int]) -> None:
    acc = StatsAccumulator()
    acc.set_occupancy(10, 5, 5)
    c, r, p = gauges
    with pytest.raises(InvalidArgumentError) as info:
        acc.set_occupancy(c, r, p)
    assert str(info.value) == (
        f"occupancy must satisfy pinned <= resident <= capacity, got capacity {c}, "
        f"resident {r}, pinned {p}"
    )
    m = acc.take().to_dict()["manager"]
    assert (m["capacity_blocks"], m["resident_blocks"], m["pinned_blocks"]) == (10, 5, 5)
