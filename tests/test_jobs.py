"""JobTracker: ids, finished storing / loading semantics, stats recording, bad input."""

from __future__ import annotations

import pytest

from kvoff import (
    InvalidArgumentError,
    InvalidStateError,
    JobTracker,
    StatsAccumulator,
    UnknownJobError,
)


def state(t: JobTracker, *reqs: str) -> tuple[int, dict[str, list[int]]]:
    return t.num_pending, {r: t.pending_jobs(r) for r in reqs}


def test_job_ids_count_up_and_pending_jobs_track_them() -> None:
    t = JobTracker()
    assert t.stats is None
    ids = [
        t.submit("a", "GPU_to_CPU", 2, 200),
        t.submit("b", "CPU_to_GPU", 1, 100),
        t.submit("a", "CPU_to_GPU", 1, 100),
        t.submit("a", "GPU_to_CPU", 1, 100),
    ]
    assert ids == [0, 1, 2, 3]
    assert state(t, "a", "b", "c") == (4, {"a": [0, 2, 3], "b": [1], "c": []})
    assert t.complete(2, True, 0.1) == "a"
    assert state(t, "a", "b") == (3, {"a": [0, 3], "b": [1]})


@pytest.mark.parametrize("alias", ["store", "load"])
def test_the_store_and_load_aliases_are_refused(alias: str) -> None:
    acc = StatsAccumulator()
    t = JobTracker(acc)
    t.submit("a", "GPU_to_CPU", 1, 100)
    with pytest.raises(InvalidArgumentError, match=f'unknown transfer direction "{alias}"'):
        t.submit("a", alias, 1, 100)
    assert state(t, "a") == (1, {"a": [0]})


def test_finishes_storing_only_after_finish_and_last_store() -> None:
    t = JobTracker()
    s1 = t.submit("r", "GPU_to_CPU", 1, 10)
    s2 = t.submit("r", "GPU_to_CPU", 1, 10)
    t.complete(s1, True, 0.01)
    assert t.take_finished() == ([], [])  # not finished by the engine yet
    t.request_finished("r")
    assert t.take_finished() == ([], [])  # s2 still pending
    t.complete(s2, False, 0.01)  # a failed store is done too
    assert t.take_finished() == (["r"], [])
    assert t.take_finished() == ([], [])
    assert state(t, "r") == (0, {"r": []})


def test_finished_request_without_pending_stores_is_reported_at_once() -> None:
    t = JobTracker()
    t.request_finished("never-stored")
    s = t.submit("stored-before", "GPU_to_CPU", 1, 10)
    t.complete(s, True, 0.0)
    t.request_finished("stored-before")
    assert t.take_finished() == (["never-stored", "stored-before"], [])


def test_loads_do_not_hold_back_storing_and_finish_loading_on_their_own() -> None:
    t = JobTracker()
    load = t.submit("r", "CPU_to_GPU", 2, 20)
    t.request_finished("r")
    assert t.take_finished() == (["r"], [])
    assert t.pending_jobs("r") == [load]
    t.complete(load, True, 0.0)
    assert t.take_finished() == ([], ["r"])
    assert state(t, "r") == (0, {"r": []})


def test_loading_finishes_with_the_last_load_and_once_per_take() -> None:
    t = JobTracker()
    l1 = t.submit("r", "CPU_to_GPU", 1, 10)
    l2 = t.submit("r", "CPU_to_GPU", 1, 10)
    other = t.submit("q", "CPU_to_GPU", 1, 10)
    t.complete(l2, True, 0.0)
    assert t.take_finished() == ([], [])
    t.complete(other, True, 0.0)
    t.complete(l1, True, 0.0)
    l3 = t.submit("r", "CPU_to_GPU", 1, 10)
    t.complete(l3, True, 0.0)
    assert t.take_finished() == ([], ["q", "r"])


def test_completions_are_recorded_into_the_stats() -> None:
    acc = StatsAccumulator()
    t = JobTracker(stats=acc)
    assert t.stats is acc
    store = t.submit("r", "GPU_to_CPU", 4, 1_000_000)
    load = t.submit("r", "CPU_to_GPU", 2, 500_000)
    bad = t.submit("r", "CPU_to_GPU", 1, 300)
    t.complete(store, True, 0.001)
    t.complete(load, True, 0.0005)
    t.complete(bad, False, 0.002)
    r = acc.take().reduce()
    assert (r["GPU_to_CPU_ops"], r["GPU_to_CPU_blocks"], r["GPU_to_CPU_total_bytes"]) == (
        1,
        4,
        1_000_000,
    )
    assert r["GPU_to_CPU_total_time"] == 0.001
    assert (r["CPU_to_GPU_ops"], r["CPU_to_GPU_blocks"], r["CPU_to_GPU_total_bytes"]) == (
        1,
        2,
        500_000,
    )
    assert (r["CPU_to_GPU_failed_ops"], r["CPU_to_GPU_failed_bytes"]) == (1, 300)
    assert r["CPU_to_GPU_total_time"] == 0.0005


def snapshot(t: JobTracker, acc: StatsAccumulator) -> object:
    return (t.num_pending, t.pending_jobs("r"), t.pending_jobs("done"), acc.take().to_dict())


def test_bad_completions_raise_and_change_nothing() -> None:
    acc = StatsAccumulator()
    t = JobTracker(acc)
    j = t.submit("r", "GPU_to_CPU", 1, 10)
    done = t.submit("done", "CPU_to_GPU", 1, 10)
    t.complete(done, True, 0.1)
    acc.take()
    before = snapshot(t, acc)
    cases: list[tuple[type[Exception], str, int, float]] = [
        (UnknownJobError, "job 99 was never submitted (next job id is 2)", 99, 0.1),
        (UnknownJobError, "job -1 was never submitted", -1, 0.1),
        (UnknownJobError, f"job {done} has already completed", done, 0.1),
        (InvalidArgumentError, "got NaN", j, float("nan")),
        (InvalidArgumentError, "got inf", j, float("inf")),
        (InvalidArgumentError, "got -1", j, -1.0),
    ]
    for exc, message, job, seconds in cases:
        with pytest.raises(exc) as info:
            t.complete(job, True, seconds)
        assert message in str(info.value)
        assert snapshot(t, acc) == before
    assert t.take_finished() == ([], ["done"])
    with pytest.raises(KeyError):  # UnknownJobError is also a KeyError
        t.complete(done, True, 0.1)


def test_bad_submissions_raise_and_change_nothing() -> None:
    t = JobTracker()
    t.submit("r", "GPU_to_CPU", 1, 10)
    before = state(t, "r", "x")
    with pytest.raises(InvalidArgumentError, match='unknown transfer direction "up"'):
        t.submit("x", "up", 1, 10)
    with pytest.raises(InvalidArgumentError, match="num_blocks must be a non-negative int, got -1"):
        t.submit("x", "GPU_to_CPU", -1, 10)
    with pytest.raises(InvalidArgumentError, match="num_bytes must be a non-negative int, got -10"):
        t.submit("x", "GPU_to_CPU", 1, -10)
    assert state(t, "r", "x") == before
    # Ids are not consumed by failed submissions.
    assert t.submit("x", "CPU_to_GPU", 1, 1) == 1


def test_finished_requests_take_no_new_jobs_and_cannot_finish_twice() -> None:
    t = JobTracker()
    s = t.submit("r", "GPU_to_CPU", 1, 10)
    t.request_finished("r")
    with pytest.raises(InvalidStateError, match='request "r" is already marked finished'):
        t.request_finished("r")
    with pytest.raises(InvalidStateError, match="no new jobs may be submitted"):
        t.submit("r", "GPU_to_CPU", 1, 10)
    assert state(t, "r") == (1, {"r": [s]})
    assert t.take_finished() == ([], [])
    t.complete(s, True, 0.0)
    assert t.take_finished() == (["r"], [])


def test_absurd_sizes_durations_and_wrong_types_raise_and_change_nothing() -> None:
    acc = StatsAccumulator()
    t = JobTracker(acc)
    j = t.submit("r", "GPU_to_CPU", 1, 2**50)
    before = state(t, "r")
    submits: list[tuple[tuple[object, ...], str]] = [
        (
            ("r", "GPU_to_CPU", 1, 2**50 + 1),
            "num_bytes must be at most 2^50 (1 PiB) for one transfer",
        ),
        (("r", "GPU_to_CPU", 1, 2**64), "num_bytes must be an int in 0..=2^64-1"),
        (("r", "GPU_to_CPU", True, 10), "num_blocks must be an int, got bool"),
        (("r", "GPU_to_CPU", 1, 10.0), "num_bytes must be an int, got float"),
        (("\udcff", "GPU_to_CPU", 1, 10), "req_id must be a str of valid Unicode"),
        ((7, "GPU_to_CPU", 1, 10), "req_id must be a str, got int"),
    ]
    for args, message in submits:
        with pytest.raises(InvalidArgumentError) as info:
            t.submit(*args)  # type: ignore[arg-type]
        assert str(info.value).startswith(message)
        assert state(t, "r") == before
    completes: list[tuple[tuple[object, ...], str]] = [
        ((j, True, 1e12), "transfer time must be at most 86400 seconds (one day)"),
        ((j, True, True), "seconds must be a number of seconds (int or float), got bool"),
        ((j, 1, 0.1), "success must be a bool, got int"),
        ((True, True, 0.1), "job_id must be an int, got bool"),
    ]
    for args, message in completes:
        with pytest.raises(InvalidArgumentError) as info:
            t.complete(*args)  # type: ignore[arg-type]
        assert str(info.value).startswith(message)
        assert state(t, "r") == before
    with pytest.raises(InvalidArgumentError, match="req_id must be a str of valid Unicode"):
        t.request_finished("\ud800")
    with pytest.raises(InvalidArgumentError, match="req_id must be a str of valid Unicode"):
        t.pending_jobs("\ud800")
    assert acc.take().is_empty()
    assert t.complete(j, True, 86_400) == "r"
    assert acc.take().to_dict()["transfers"]["GPU_to_CPU"]["time_ns"] == 86_400 * 10**9
