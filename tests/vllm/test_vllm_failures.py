"""A transfer that fails inside kvoff's copy engine, through vLLM's real Scheduler.

vLLM 0.33's own connector asserts that every transfer succeeded, so there a failed copy stops
the engine (pinned below). ``KvoffConnector`` turns it into a cache miss
(``kvoff.vllm.transfer_failures``): a failed store completes as failed, so its chunks are
never loadable, the manager emits its ``metadata_only`` removal (not published: nothing was
announced) and the chunks are reused; a failed load is reported as vLLM's ``invalid_block_ids``
and vLLM recomputes the blocks. The failure is injected where a real one would arise: the copy
inside kvoff's engine raises, and the engine reports ``success=False``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from _engine import CHUNK_BYTES, Engine, StepRecord
from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash
from vllm.v1.kv_offload.base import LookupResult, Medium, make_offload_key
from vllm.v1.request import RequestStatus

TIER = 8  # chunks


def extra(tp: int = 1) -> dict[str, object]:
    # cpu_bytes_to_use is the total over the ranks (vLLM's CPU spec sizes it so).
    return {"cpu_bytes_to_use": TIER * CHUNK_BYTES * tp}


def engine(model_dir: Path, tp: int = 1, **kwargs: object) -> Engine:
    return Engine(
        model_dir,
        extra(tp),
        kv_connector="KvoffConnector",
        kv_connector_module_path="kvoff.vllm",
        tp=tp,
        **kwargs,  # type: ignore[arg-type]
    )


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 131 + i * 7) % 900 + 50 for i in range(n)]


def keys(eng: Engine, req_id: str, blocks: range) -> list[bytes]:
    req = eng.requests[req_id]
    return [make_offload_key(req.block_hashes[i], 0) for i in blocks]


def ext(eng: Engine, req_id: str, blocks: range) -> list[object]:
    req = eng.requests[req_id]
    return [maybe_convert_block_hash(req.block_hashes[i]) for i in blocks]


def flatten(records: list, what: str) -> list:
    return [x for r in records for x in getattr(r, what)]


def raw_events(eng: Engine) -> list[tuple[list[bytes], Medium, bool, bool]]:
    return [(sorted(e.keys), e.medium, e.removed, e.metadata_only) for e in eng.manager_events]


def test_failed_store_never_becomes_loadable_and_its_chunks_are_reused(model_dir: Path) -> None:
    eng = engine(model_dir)
    eng.record_manager_events()
    eng.fail_next_transfer(rank=0, store=True)
    eng.add("a", prompt(1, 40))
    recs = eng.run()
    assert eng.finished == ["a"]
    assert flatten(recs, "stores") == [("a", [0, 1])]
    (result,) = eng.transfer_results[0]
    assert (result.success, result.transfer_size, result.transfer_time) == (
        False,
        2 * CHUNK_BYTES,
        0.0,
    )
    # Completed as failed: nothing published (no BlockStored was ever announced for these
    # chunks), the manager's own event is the metadata-only removal, and the tier is empty.
    assert flatten(recs, "stored") == []
    assert flatten(recs, "removed") == []
    k = sorted(keys(eng, "a", range(2)))
    assert raw_events(eng) == [(k, Medium.CPU, True, True)]
    assert len(eng.manager.core) == 0
    assert eng.manager.core.pinned == 0
    assert [eng.manager.core.lookup(x) for x in k] == [LookupResult.MISS] * 2

    # The same prompt again: nothing to load, stored afresh (fresh ids come before the freed
    # 0 and 1), and a third time it loads back byte for byte.
    assert eng.scheduler.reset_prefix_cache()
    eng.add("a2", prompt(1, 40))
    recs = eng.run()
    assert flatten(recs, "loads") == []
    assert flatten(recs, "stores") == [("a2", [2, 3])]
    assert sorted(flatten(recs, "stored"), key=repr) == sorted(ext(eng, "a2", range(2)), key=repr)
    assert eng.scheduler.reset_prefix_cache()
    eng.add("a3", prompt(1, 40))
    recs = eng.run()
    assert flatten(recs, "loads") == [("a3", [2, 3], 2)]
    assert eng.loads_checked == 2

    # vLLM's transfer counters count bytes that arrived; kvoff's count the failure apart.
    vllm_store_bytes = sum(
        s.get("data", {}).get("vllm:kv_offload_store_bytes", {}).get((), 0) for s in eng.kv_stats
    )
    assert vllm_store_bytes == 2 * CHUNK_BYTES
    failed = [
        s["kvoff"]["transfers"]["GPU_to_CPU"]["failed_ops"] for s in eng.kv_stats if s.get("kvoff")
    ]
    assert sum(failed) == 1


def test_vllms_own_connector_stops_on_a_failed_store(model_dir: Path) -> None:
    # The reason KvoffConnector has its own roles: vLLM 0.33's worker side asserts success.
    eng = Engine(
        model_dir,
        {
            "spec_name": "KvoffOffloadingSpec",
            "spec_module_path": "kvoff.vllm",
            "cpu_bytes_to_use": TIER * CHUNK_BYTES,
        },
    )
    eng.fail_next_transfer(rank=0, store=True)
    eng.add("a", prompt(1, 40))
    with pytest.raises(AssertionError) as info:
        eng.run()
    assert info.traceback[-1].name == "get_finished"
    assert "transfer_result.success" in str(info.traceback[-1].statement)


def _b_loads_a_prompt_with_its_first_load_failing(eng: Engine) -> list[StepRecord]:
    """a stores a prompt; with the GPU prefix cache emptied, b's load of it fails once."""
    eng.add("a", prompt(1, 40))
    eng.run()
    assert eng.scheduler.reset_prefix_cache()
    eng.fail_next_transfer(rank=0, store=False)
    eng.add("b", prompt(1, 40))
    return eng.run()


def test_failed_load_is_recomputed_by_vllm_and_the_chunks_stay(model_dir: Path) -> None:
    eng = engine(model_dir, kv_load_failure_policy="recompute")
    recs = _b_loads_a_prompt_with_its_first_load_failing(eng)
    # The first load fails; vLLM treats its GPU blocks as invalid, looks b up again and loads
    # the same chunks a second time, which succeeds and is checked byte for byte.
    assert flatten(recs, "loads") == [("b", [0, 1], 2), ("b", [0, 1], 2)]
    first, again = [r for r in recs if r.loads]
    (req_id, gpu_ids), _ = eng.load_gpu_blocks
    assert req_id == "b" and len(gpu_ids) == 2
    assert first.load_errors == sorted(gpu_ids)
    assert again.load_errors == []
    assert flatten(recs, "load_errors") == sorted(gpu_ids)
    assert eng.loads_checked == 2
    assert eng.finished == ["a", "b"]
    # The CPU chunks were never at fault: unpinned after both loads, and still there.
    assert eng.manager.core.pinned == 0
    assert len(eng.manager.core) == 2
    assert [(r.success, r.transfer_size) for r in eng.transfer_results[0]] == [
        (True, 2 * CHUNK_BYTES),  # a's store
        (False, 2 * CHUNK_BYTES),  # b's first load
        (True, 2 * CHUNK_BYTES),  # b's second load
    ]


@pytest.mark.parametrize("slow", [0, 1], ids=["success-last", "failure-last"])
def test_store_failed_on_one_rank_completes_as_failed_once_both_report(
    model_dir: Path, slow: int
) -> None:
    # Rank 1's copy fails; rank ``slow`` reports a step late, so the failure arrives first
    # (slow=0) or last (slow=1). Either way the job completes, as failed, with the last report.
    eng = engine(model_dir, tp=2)
    eng.record_manager_events()
    eng.fail_next_transfer(rank=1, store=True)
    eng.add("a", prompt(1, 40))
    first = eng.step()  # prefill; the store job is created
    assert first.stores == [("a", [0, 1])]
    held = eng.step(hold=frozenset({slow}))  # both ranks copy; one reports
    k = sorted(keys(eng, "a", range(2)))
    assert held.stored == []
    assert [eng.manager.core.lookup(x) for x in k] == [LookupResult.HIT_PENDING] * 2
    assert eng.manager_events == []
    late = eng.step()  # the other rank reports: the job is complete, and failed
    assert late.stored == [] and late.removed == []
    assert raw_events(eng) == [(k, Medium.CPU, True, True)]
    assert [eng.manager.core.lookup(x) for x in k] == [LookupResult.MISS] * 2
    assert [r.success for r in eng.transfer_results[0]] == [True]
    assert [r.success for r in eng.transfer_results[1]] == [False]
    eng.run()
    assert len(eng.manager.core) == 0 and eng.manager.core.pinned == 0


def test_failed_load_fails_the_request_under_vllms_default_policy(model_dir: Path) -> None:
    eng = engine(model_dir)  # kv_load_failure_policy="fail", vLLM's default
    recs = _b_loads_a_prompt_with_its_first_load_failing(eng)
    assert flatten(recs, "loads") == [("b", [0, 1], 2)]
    assert eng.requests["b"].status == RequestStatus.FINISHED_ERROR
    assert eng.finished == ["a", "b"]
    # The engine goes on: the chunks are unpinned and serve the next request.
    assert eng.manager.core.pinned == 0
    eng.add("c", prompt(1, 40))
    recs = eng.run()
    assert flatten(recs, "loads") == [("c", [0, 1], 2)]
    assert eng.loads_checked == 2


def test_worker_metadata_sums_failures_over_ranks_and_survives_pickling() -> None:
    import pickle

    from vllm.distributed.kv_transfer.kv_connector.v1.offloading.common import (
        OffloadingWorkerMetadata,
    )

    from kvoff.vllm.transfer_failures import KvoffWorkerMetadata

    rank0, rank1 = KvoffWorkerMetadata(), KvoffWorkerMetadata()
    for job in (3, 4):
        rank0.mark_completed(job)
        rank1.mark_completed(job)
    rank0.mark_failed(4)
    rank1.mark_failed(4)
    rank0.transfer_stats.store.record(4096, 0.5)
    merged = rank0.aggregate(rank1)
    assert isinstance(merged, KvoffWorkerMetadata)
    assert (merged.completed_jobs, merged.failed_jobs) == ({3: 2, 4: 2}, {4: 2})
    assert merged.transfer_stats.store.bytes == 4096
    # A rank with vLLM's plain metadata (no failures to report) merges in as zero failures.
    plain = OffloadingWorkerMetadata(completed_jobs={5: 1})
    assert merged.aggregate(plain).failed_jobs == {4: 2}  # type: ignore[attr-defined]
    # What crosses vLLM's process boundary comes back equal.
    assert pickle.loads(pickle.dumps(merged)) == merged
    # The inputs are untouched.
    assert (rank0.failed_jobs, rank1.failed_jobs) == ({4: 1}, {4: 1})
