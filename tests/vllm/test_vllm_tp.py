"""Tensor parallelism as vLLM runs it: two worker ranks, each with its own worker-side
connector and kvoff worker over its own KV caches, their outputs combined by vLLM's
``KVOutputAggregator``, and vLLM's scheduler expecting ``world_size`` reports per job.

A job is complete only when both ranks have reported it: a store is not loadable (HIT_PENDING,
no BlockStored) and a load keeps its chunks pinned and its request waiting until the slower
rank reports. Each rank's KV differs (per-rank fingerprints), and every load is checked byte
for byte against its own rank's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from _engine import CHUNK_BYTES, Engine
from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash
from vllm.v1.kv_offload.base import LookupResult, make_offload_key
from vllm.v1.request import RequestStatus

TIER = 8  # chunks
TP = 2


def engine(model_dir: Path, connector: str) -> Engine:
    extra: dict[str, object] = {"cpu_bytes_to_use": TIER * CHUNK_BYTES * TP}
    if connector == "OffloadingConnector":
        extra |= {"spec_name": "KvoffOffloadingSpec", "spec_module_path": "kvoff.vllm"}
        return Engine(model_dir, extra, tp=TP)
    return Engine(
        model_dir, extra, kv_connector=connector, kv_connector_module_path="kvoff.vllm", tp=TP
    )


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 131 + i * 7) % 900 + 50 for i in range(n)]


@pytest.mark.parametrize("connector", ["OffloadingConnector", "KvoffConnector"])
def test_jobs_complete_only_when_both_ranks_report(model_dir: Path, connector: str) -> None:
    eng = engine(model_dir, connector)
    assert eng.manager.core.num_chunks == TIER  # cpu_bytes_to_use is over both ranks
    eng.add("a", prompt(1, 40))
    assert eng.step().stores == [("a", [0, 1])]
    req = eng.requests["a"]
    keys = [make_offload_key(req.block_hashes[i], 0) for i in range(2)]
    hashes = [maybe_convert_block_hash(req.block_hashes[i]) for i in range(2)]

    # Both ranks copy; rank 1 is slow to report: the store is not complete.
    held = eng.step(hold=frozenset({1}))
    assert held.stored == []
    assert [eng.manager.core.lookup(k) for k in keys] == [LookupResult.HIT_PENDING] * 2
    assert [r.job_id for r in eng.transfer_results[0]] == [0]
    assert eng.transfer_results[1] == []
    late = eng.step()
    assert sorted(late.stored, key=repr) == sorted(hashes, key=repr)
    assert [eng.manager.core.lookup(k) for k in keys] == [LookupResult.HIT] * 2
    for rank in range(TP):
        ((job, ok, size),) = [
            (r.job_id, r.success, r.transfer_size) for r in eng.transfer_results[rank]
        ]
        assert (job, ok, size) == (0, True, 2 * CHUNK_BYTES)  # each rank moves its own pages
    eng.run()

    # The same prompt again, from the CPU tier: both ranks load their own bytes.
    assert eng.scheduler.reset_prefix_cache()
    eng.add("b", prompt(1, 40))
    loading = eng.step(hold=frozenset({1}))
    assert loading.loads == [("b", [0, 1], 2)]
    assert eng.loads_checked == 2  # rank 0's two blocks, checked against rank 0's KV
    assert eng.requests["b"].status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert eng.manager.core.pinned == 2
    eng.step()  # rank 1 reports: the load is complete
    assert eng.loads_checked == 4  # and rank 1's, against rank 1's KV
    assert eng.manager.core.pinned == 0
    eng.run()
    assert eng.finished == ["a", "b"]
    assert [len(results) for results in eng.transfer_results] == [2, 2]


def test_a_sync_load_on_a_slow_rank_is_waited_for_when_its_request_is_preempted(
    model_dir: Path,
) -> None:
    # A load within the step (sync_load_budget_bytes) that rank 1 has not reported yet is
    # still a pending job when vLLM preempts its request (here through
    # reset_prefix_cache(reset_running_requests=True)): the scheduler asks the ranks to flush
    # it, and each waits for it before the request's blocks are used again (the harness checks
    # that nothing flushed is still in flight after handle_preemptions).
    extra = {
        "cpu_bytes_to_use": TIER * CHUNK_BYTES * TP,
        "sync_load_budget_bytes": 1_000_000,
    }
    eng = Engine(
        model_dir,
        extra,
        kv_connector="KvoffConnector",
        kv_connector_module_path="kvoff.vllm",
        tp=TP,
    )
    eng.add("a", prompt(1, 40))
    eng.run()
    assert eng.scheduler.reset_prefix_cache()
    eng.add("b", [*prompt(1, 40), *prompt(2, 20)], max_tokens=5)
    loading = eng.step(hold=frozenset({1}))
    assert loading.loads == [("b", [0, 1], 2)]
    assert loading.stores == [("b", [2])]
    # A sync load: b ran in this very step, on the blocks rank 0 reported loaded.
    assert eng.requests["b"].status == RequestStatus.RUNNING
    assert eng.loads_checked == 2
    # Pinned: the two chunks being loaded (rank 1 has not reported) and the chunk allocated
    # for b's third block, whose store goes out next step.
    assert eng.manager.core.pinned == 3

    assert eng.scheduler.reset_prefix_cache(reset_running_requests=True)
    flush = eng.step()
    assert flush.preempted == ["b"]
    assert flush.flushed == [("load", "b", [0, 1]), ("store", "b", [2])]
    assert eng.loads_checked == 4  # rank 1's load, reported after its wait, byte for byte
    # Both flushed jobs are complete on both ranks: nothing pinned, b's third block announced.
    assert eng.manager.core.pinned == 0
    assert flush.stored == [maybe_convert_block_hash(eng.requests["b"].block_hashes[2])]
    resumed = eng.step()
    assert resumed.loads == [("b", [0, 1, 2], 3)]  # b's blocks come back, from both ranks
    eng.run()
    assert eng.loads_checked == 10
    assert eng.finished == ["a", "b"]
    assert eng.manager.core.pinned == 0
