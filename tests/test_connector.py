"""The scheduler and worker halves together, on CPU tensors: exact ids, exact bytes, and the
lifecycle rules (delayed free, waiting on another request's load, preemption, failures)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from _connector_rig import (
    A_HASHES,
    A_IDS,
    B_HASHES,
    B_IDS,
    CBS,
    GBS,
    NUM_CPU_BLOCKS,
    NUM_GPU_BLOCKS,
    Rig,
    assert_same_block,
    store_a,
)
from kvoff import InvalidArgumentError, InvalidStateError, OffloadingManager
from kvoff.connector import (
    LOAD,
    STORE,
    OffloadingScheduler,
    RequestStep,
    StepMetadata,
    TransferSpec,
    WorkerOutput,
)


def test_store_then_load_moves_exact_bytes_and_ids() -> None:
    rig = Rig()
    before = [t.clone() for t in rig.kv[0]]
    meta, (out,) = store_a(rig)
    assert meta.loads == []
    (store,) = meta.stores
    assert (store.transfer_id, store.req_id, store.direction) == (0, "A", STORE)
    assert store.gpu_block_ids.tolist() == A_IDS[:8]  # the 9th block is partial: never stored
    assert store.cpu_block_ids.tolist() == [0, 1, 2, 3]  # fresh ids first
    assert out.transfers == [(0, True)]
    assert out.finished_storing == ["A"]
    assert [rig.manager.block_state(h) for h in (101, 103, 105, 107)] == [0, 0, 0, 0]
    assert rig.sched.request_finished("A") is False  # its store is already complete

    # B shares A's 32-token prefix: all four CPU blocks hit.
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    assert [rig.manager.block_state(h) for h in (101, 103, 105, 107)] == [1, 1, 1, 1]
    meta, (out,) = rig.run_step([])
    (load,) = meta.loads
    assert (load.transfer_id, load.req_id, load.direction) == (1, "B", LOAD)
    assert load.gpu_block_ids.tolist() == B_IDS[:8]
    assert load.cpu_block_ids.tolist() == [0, 1, 2, 3]
    assert out.transfers == [(1, True)]
    assert out.finished_loading == ["B"]
    assert rig.manager.pinned == 0
    for a, b in zip(A_IDS[:8], B_IDS[:8], strict=True):
        assert_same_block(rig, b, a)
    untouched = set(range(NUM_GPU_BLOCKS)) - set(B_IDS[:8])
    for layer, old in zip(rig.kv[0], before, strict=True):
        for gid in untouched:
            assert torch.equal(layer[:, gid].view(torch.int16), old[:, gid].view(torch.int16))


def test_stats_describe_the_interval_exactly() -> None:
    rig = Rig()
    store_a(rig)
    rig.admit("B", B_HASHES, B_IDS, 40)
    rig.run_step([])
    r = rig.stats.take().reduce()
    block_bytes = rig.transfers[0].gpu_block_bytes
    assert r["GPU_to_CPU_ops"] == 1 and r["CPU_to_GPU_ops"] == 1
    assert r["GPU_to_CPU_total_bytes"] == 8 * block_bytes
    assert r["CPU_to_GPU_total_bytes"] == 8 * block_bytes
    # A queried blocks 101..107 (4, none hit: the 33rd token is the one to compute); B 4 of 4.
    assert (r["blocks_queried"], r["blocks_hit"]) == (8, 4)
    assert (r["tokens_queried"], r["tokens_hit"]) == (8 * CBS, 4 * CBS)
    assert r["blocks_stored"] == 4
    assert (r["capacity_blocks"], r["resident_blocks"], r["pinned_blocks"]) == (8, 4, 0)


def test_load_skips_what_the_gpu_prefix_cache_holds() -> None:
    rig = Rig()
    store_a(rig)
    before = rig.block(0, B_IDS[0])
    # The GPU already holds B's first GPU block (4 tokens): 28 tokens come from the CPU tier.
    assert rig.admit("B", B_HASHES, B_IDS, 40, computed=4) == 28
    meta, (out,) = rig.run_step([])
    (load,) = meta.loads
    assert load.gpu_block_ids.tolist() == B_IDS[1:8]
    assert load.cpu_block_ids.tolist() == [0, 1, 2, 3]
    assert out.transfers == [(1, True)]
    for a, b in zip(A_IDS[1:8], B_IDS[1:8], strict=True):
        assert_same_block(rig, b, a)
    for got, old in zip(rig.block(0, B_IDS[0]), before, strict=True):
        assert torch.equal(got.view(torch.int16), old.view(torch.int16))


def test_second_request_waits_for_blocks_being_loaded() -> None:
    rig = Rig()
    store_a(rig)
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    # B's load is queued, not yet done: C must not load the same blocks a second time.
    assert rig.sched.get_num_new_matched_tokens("C", B_HASHES, 40, 0) is None
    meta, _ = rig.run_step([])
    assert len(meta.loads) == 1
    assert rig.sched.get_num_new_matched_tokens("C", B_HASHES, 40, 0) == 32


def test_stores_follow_the_request_as_it_grows() -> None:
    rig = Rig()
    ids = list(range(20, 32))
    hashes = list(range(300, 312))
    rig.admit("R", hashes[:3], ids, 13)  # 13 prompt tokens: one full CPU block
    meta, _ = rig.run_step([RequestStep("R", hashes[:3], ids, 13)])
    assert [s.gpu_block_ids.tolist() for s in meta.stores] == [[20, 21]]
    assert [s.cpu_block_ids.tolist() for s in meta.stores] == [[0]]
    # Decode to 23 tokens: GPU blocks 3 and 4 are full, only CPU block 1 (GPU 2, 3) is new.
    meta, _ = rig.run_step([RequestStep("R", hashes[:5], ids, 23)])
    assert [s.gpu_block_ids.tolist() for s in meta.stores] == [[22, 23]]
    assert [s.cpu_block_ids.tolist() for s in meta.stores] == [[1]]
    # No new full CPU block: nothing to store.
    meta, _ = rig.run_step([RequestStep("R", hashes[:5], ids, 23)])
    assert meta.stores == []
    assert [h in rig.manager for h in (301, 303, 305)] == [True, True, False]


def test_finished_request_keeps_blocks_until_its_store_completes() -> None:
    rig = Rig()
    rig.admit("A", A_HASHES, A_IDS, 33)
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    rig.worker.submit_stores(meta)
    # The engine finishes A while its store is in flight: the GPU blocks must stay.
    assert rig.sched.request_finished("A") is True
    assert rig.sched.take_freeable() == []
    out = rig.worker.get_finished(["A"])
    assert out.finished_storing == ["A"]
    rig.sched.update_from_output(out)
    assert rig.sched.take_freeable() == ["A"]
    assert not rig.sched.has_request("A")


def test_preemption_flushes_stores_and_restarts_the_request() -> None:
    rig = Rig()
    rig.admit("A", A_HASHES, A_IDS, 33)
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    rig.worker.submit_stores(meta)
    rig.worker.handle_preemptions(["A"])
    # The wait consumed the result from the copy engine; the worker still reports it.
    assert rig.transfers[0].get_finished() == []
    out = rig.worker.get_finished()
    assert out.transfers == [(0, True)]
    rig.sched.update_from_output(out)
    rig.sched.request_preempted("A")
    # Rescheduled later with new GPU blocks: its blocks are already in the tier, nothing stored.
    new_ids = list(range(30, 39))
    stored = rig.manager.blocks_stored
    assert rig.admit("A", A_HASHES, new_ids, 33) == 32  # now served from the CPU tier
    meta, _ = rig.run_step([RequestStep("A", A_HASHES, new_ids, 33)])
    assert [s.gpu_block_ids.tolist() for s in meta.loads] == [new_ids[:8]]
    assert meta.stores == []
    assert rig.manager.blocks_stored == stored


def test_failed_store_frees_its_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()

    def refuse(*args: object) -> None:
        raise RuntimeError("simulated CUDA error")

    monkeypatch.setattr(rig.transfers[0], "transfer_async", refuse)
    _meta, (out,) = store_a(rig)
    assert out.transfers == [(0, False)]
    assert out.finished_storing == ["A"]
    # Nothing of A became loadable, and every slot is free again.
    assert rig.manager.lookup([101, 103, 105, 107]) == 0
    assert (rig.manager.free, rig.manager.resident) == (NUM_CPU_BLOCKS, 0)
    r = rig.stats.take().reduce()
    assert (r["GPU_to_CPU_ops"], r["GPU_to_CPU_failed_ops"]) == (0, 1)


def test_failed_load_is_reported_for_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()
    store_a(rig)
    rig.admit("B", B_HASHES, B_IDS, 40)
    real = rig.transfers[0].transfer_async

    def fail_loads(job_id: int, direction: str, gpu: object, cpu: object) -> None:
        if direction == LOAD:
            raise RuntimeError("simulated CUDA error")
        real(job_id, direction, gpu, cpu)

    monkeypatch.setattr(rig.transfers[0], "transfer_async", fail_loads)
    _, (out,) = rig.run_step([])
    assert out.transfers == [(1, False)]
    assert rig.sched.take_failed_loads() == {"B": B_IDS[:8]}
    assert rig.sched.take_failed_loads() == {}
    # The CPU tier still holds the blocks, unpinned; the next request may load them.
    assert rig.manager.pinned == 0
    assert rig.sched.get_num_new_matched_tokens("C", B_HASHES, 40, 0) == 32


def test_tensor_parallel_transfer_completes_when_every_worker_reported() -> None:
    rig = Rig(num_workers=2)
    rig.admit("A", A_HASHES, A_IDS, 33)
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    outs = []
    for w in rig.workers:
        w.submit_stores(meta)
        outs.append(w.get_finished())
    rig.sched.update_from_output(outs[0])
    assert rig.manager.block_state(101) == -1  # still in flight: rank 1 has not reported
    assert rig.sched.num_transfers_in_flight == 1
    rig.sched.update_from_output(outs[1])
    assert rig.manager.block_state(101) == 0
    assert rig.sched.num_transfers_in_flight == 0


def test_tensor_parallel_failure_on_one_rank_fails_the_transfer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(num_workers=2)

    def refuse(*args: object) -> None:
        raise RuntimeError("simulated CUDA error on rank 1")

    monkeypatch.setattr(rig.transfers[1], "transfer_async", refuse)
    _, outs = store_a(rig)
    assert [o.transfers for o in outs] == [[(0, True)], [(0, False)]]
    assert rig.manager.lookup([101]) == 0
    assert rig.manager.free == NUM_CPU_BLOCKS


def test_unknown_transfer_id_is_refused_and_nothing_changes() -> None:
    rig = Rig()
    rig.admit("A", A_HASHES, A_IDS, 33)
    meta = rig.sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    rig.worker.submit_stores(meta)
    out = rig.worker.get_finished()
    bad = WorkerOutput(transfers=[*out.transfers, (99, True)])
    with pytest.raises(InvalidStateError, match=r"unknown transfer ids \[99\]"):
        rig.sched.update_from_output(bad)
    assert rig.manager.block_state(101) == -1  # the valid entry was not applied either
    with pytest.raises(InvalidStateError, match=r"transfer ids \[0\] more than once"):
        rig.sched.update_from_output(WorkerOutput(transfers=out.transfers * 2))
    assert rig.manager.block_state(101) == -1
    rig.sched.update_from_output(out)
    assert rig.manager.block_state(101) == 0


@pytest.mark.parametrize(
    ("gbs", "cbs", "manager_bs", "workers", "message"),
    [
        (4, 6, 6, 1, "not a multiple"),
        (0, 8, 8, 1, "must be positive"),
        (4, 8, 16, 1, "manager.block_size=16 differs"),
        (4, 8, 8, 0, "num_workers must be positive"),
    ],
)
def test_bad_scheduler_arguments(
    gbs: int, cbs: int, manager_bs: int, workers: int, message: str
) -> None:
    manager = OffloadingManager(4, block_size=manager_bs)
    with pytest.raises(InvalidArgumentError, match=message):
        OffloadingScheduler(manager, gbs, cbs, num_workers=workers)


def test_bad_token_counts_are_refused() -> None:
    rig = Rig()
    with pytest.raises(InvalidArgumentError, match="num_computed_tokens=50 outside"):
        rig.sched.get_num_new_matched_tokens("A", A_HASHES, 33, 50)
    with pytest.raises(InvalidArgumentError, match="multiple of"):
        rig.sched.update_state_after_alloc("A", A_HASHES, A_IDS, 2, 30)
    with pytest.raises(InvalidArgumentError, match="only 3 GPU block ids"):
        rig.sched.update_state_after_alloc("A", A_HASHES, A_IDS[:3], 0, 32)
    assert rig.manager.pinned == 0


def test_messages_pickle() -> None:
    spec = TransferSpec(3, "r", STORE, np.array([1, 2]), np.array([0]))
    meta = StepMetadata(loads=[], stores=[spec])
    back = pickle.loads(pickle.dumps(meta))
    assert back.stores[0].gpu_block_ids.tolist() == [1, 2]
    out = WorkerOutput([(3, True)], ["r"], [])
    assert pickle.loads(pickle.dumps(out)) == out


def test_scheduler_passes_on_the_managers_events() -> None:
    manager = OffloadingManager(2, block_size=CBS, enable_events=True)
    sched = OffloadingScheduler(manager, GBS, CBS)
    sched.update_state_after_alloc("A", A_HASHES, A_IDS, 0, 0)
    meta = sched.build_step([RequestStep("A", A_HASHES[:4], A_IDS, 17)])  # CPU blocks 101, 103
    (store,) = meta.stores
    sched.update_from_output(WorkerOutput(transfers=[(store.transfer_id, True)]))
    (stored,) = sched.take_events()
    assert (stored.block_hashes, stored.block_size, stored.medium, stored.removed) == (
        [101, 103],
        CBS,
        "CPU",
        False,
    )
    # Two more full CPU blocks evict the first two (LRU), reported as removed.
    meta = sched.build_step([RequestStep("A", A_HASHES, A_IDS, 33)])
    assert [s.cpu_block_ids.tolist() for s in meta.stores] == [[1, 0]]
    (evicted,) = sched.take_events()
    assert (evicted.block_hashes, evicted.removed) == ([101, 103], True)
    assert sched.take_events() == []


def test_multi_step_scenario_with_concurrent_hits_and_preemption() -> None:
    """Four steps of an engine's life, checked step by step."""
    rig = Rig()
    # Step 1: A computes its prompt; its four CPU blocks are stored after the step.
    meta, (out,) = store_a(rig)
    assert [s.cpu_block_ids.tolist() for s in meta.stores] == [[0, 1, 2, 3]]
    assert rig.sched.take_freeable() == []  # A's store was complete when it finished

    # Step 2: B and C arrive with A's prefix. B gets the blocks; C must wait for B's load.
    assert rig.admit("B", B_HASHES, B_IDS, 40) == 32
    c_ids = [22, 23, 24, 25, 26, 27, 28, 29, 31, 32]
    assert rig.admit("C", B_HASHES, c_ids, 40) is None
    # D, a new request, is scheduled in the same step and stores its first CPU block (4).
    d_hashes, d_ids = [400, 401], [33, 34, 35]
    assert rig.admit("D", d_hashes, d_ids, 9) == 0
    meta = rig.sched.build_step([RequestStep("D", d_hashes, d_ids, 9)])
    assert [s.gpu_block_ids.tolist() for s in meta.loads] == [B_IDS[:8]]
    assert [(s.gpu_block_ids.tolist(), s.cpu_block_ids.tolist()) for s in meta.stores] == [
        ([33, 34], [4])
    ]
    rig.worker.start_loads(meta)
    rig.worker.submit_stores(meta)
    # D is preempted before the step's results are collected: its store is flushed first.
    rig.worker.handle_preemptions(["D"])
    rig.sched.request_preempted("D")
    out = rig.worker.get_finished()
    assert sorted(out.transfers) == [(1, True), (2, True)]
    assert out.finished_loading == ["B"]
    rig.sched.update_from_output(out)
    assert rig.manager.block_state(401) == 0  # D's block is loadable despite the preemption

    # Step 3: C is admitted now that B's load is done, and loads the same CPU blocks.
    assert rig.admit("C", B_HASHES, c_ids, 40) == 32
    # D comes back with new GPU blocks and finds its own block in the CPU tier.
    d_new = [36, 37, 38]
    assert rig.admit("D", d_hashes, d_new, 9) == 8
    meta, (out,) = rig.run_step([RequestStep("D", d_hashes, d_new, 9)])
    assert [(s.req_id, s.gpu_block_ids.tolist()) for s in meta.loads] == [
        ("C", c_ids[:8]),
        ("D", d_new[:2]),
    ]
    assert meta.stores == []  # D's block is already there
    assert sorted(out.finished_loading) == ["C", "D"]
    for a, c in zip(A_IDS[:8], c_ids[:8], strict=True):
        assert_same_block(rig, c, a)
    assert_same_block(rig, 36, 33)
    assert_same_block(rig, 37, 34)

    # Step 4: everyone finishes; nothing is pinned, nothing in flight, every slot accounted for.
    for req in ("A", "B", "C", "D"):
        assert rig.sched.request_finished(req) is False
    assert rig.sched.num_transfers_in_flight == 0
    assert (rig.manager.pinned, rig.manager.resident, rig.manager.free) == (0, 5, 3)
