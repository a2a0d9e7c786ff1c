"""vLLM's real Scheduler and OffloadingConnector with kvoff's spec, found by name, on CPU.

Exact per step: which CPU chunk ids are stored and loaded back, which blocks are evicted, and
the CPU-tier KV events vLLM's publisher receives. Every load is checked byte for byte against
the fingerprints of the blocks it restores (``_engine.Engine``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from _engine import CHUNK_BYTES, Engine
from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash

import kvoff.vllm
from kvoff.vllm.connector import KvoffConnector
from kvoff.vllm.manager import KvoffOffloadingManager

TIER = 8  # chunks


def kvoff_extra(**more: object) -> dict[str, object]:
    return {
        "spec_name": "KvoffOffloadingSpec",
        "spec_module_path": "kvoff.vllm",
        "cpu_bytes_to_use": TIER * CHUNK_BYTES,
        **more,
    }


def ext(engine: Engine, req_id: str, blocks: range) -> list[object]:
    """The external hashes vLLM's events carry for the given blocks of a request."""
    req = engine.requests[req_id]
    return [maybe_convert_block_hash(req.block_hashes[i]) for i in blocks]


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 131 + i * 7) % 900 + 50 for i in range(n)]


def flatten(records: list, what: str) -> list:
    return [x for r in records for x in getattr(r, what)]


def test_spec_found_by_module_path(model_dir: Path) -> None:
    eng = Engine(model_dir, kvoff_extra())
    assert isinstance(eng.manager, KvoffOffloadingManager)
    assert eng.manager.core.num_chunks == TIER
    assert eng.manager.core.policy == "lru"


def test_spec_and_connector_found_by_registered_name(model_dir: Path) -> None:
    kvoff.vllm.register()
    kvoff.vllm.register()  # a second registration in one process is harmless
    extra = {"spec_name": "KvoffOffloadingSpec", "cpu_bytes_to_use": TIER * CHUNK_BYTES}
    eng = Engine(model_dir, extra)
    assert isinstance(eng.manager, KvoffOffloadingManager)
    eng = Engine(model_dir, {"cpu_bytes_to_use": TIER * CHUNK_BYTES}, kv_connector="KvoffConnector")
    assert type(eng.connector) is KvoffConnector
    assert isinstance(eng.manager, KvoffOffloadingManager)


def test_connector_found_by_module_path(model_dir: Path) -> None:
    eng = Engine(
        model_dir,
        {"cpu_bytes_to_use": TIER * CHUNK_BYTES},
        kv_connector="KvoffConnector",
        kv_connector_module_path="kvoff.vllm",
    )
    assert type(eng.connector) is KvoffConnector
    assert isinstance(eng.manager, KvoffOffloadingManager)


def test_prefix_hits_growth_and_finished_requests(model_dir: Path) -> None:
    eng = Engine(model_dir, kvoff_extra())
    # Turn 1: 2 full blocks and a partial one; the full ones go to the CPU tier.
    turn1 = prompt(1, 40)
    eng.add("t1", turn1)
    recs = eng.run()
    assert flatten(recs, "stores") == [("t1", [0, 1])]
    assert sorted(flatten(recs, "stored"), key=repr) == sorted(ext(eng, "t1", range(2)), key=repr)
    assert flatten(recs, "loads") == []
    assert "t1" in eng.finished

    # Turn 2 grows the conversation; the GPU cache is dropped so the prefix comes from the CPU.
    assert eng.scheduler.reset_prefix_cache()
    turn2 = [*turn1, 7, *prompt(2, 30)]  # 71 tokens: 4 full blocks
    eng.add("t2", turn2)
    recs = eng.run()
    assert flatten(recs, "loads") == [("t2", [0, 1], 2)]
    assert flatten(recs, "stores") == [("t2", [2, 3])]
    assert sorted(flatten(recs, "stored"), key=repr) == sorted(
        ext(eng, "t2", range(2, 4)), key=repr
    )
    assert flatten(recs, "removed") == []
    assert eng.loads_checked == 2

    # Turn 3 grows again: 4 blocks come back from the CPU, 2 more are stored.
    assert eng.scheduler.reset_prefix_cache()
    eng.add("t3", [*turn2, 7, *prompt(3, 24)])  # 96 tokens: 6 full blocks
    recs = eng.run()
    assert flatten(recs, "loads") == [("t3", [0, 1, 2, 3], 4)]
    assert flatten(recs, "stores") == [("t3", [4, 5])]
    assert eng.loads_checked == 6
    assert len(eng.manager.core) == 6
    assert eng.manager.core.pinned == 0


def test_eviction_past_the_tier_size(model_dir: Path) -> None:
    eng = Engine(model_dir, kvoff_extra())
    for i, name in enumerate("abc"):
        eng.add(name, prompt(10 + i, 3 * 16 + 5))  # 3 full blocks each
        recs = eng.run()
        if name == "a":
            assert flatten(recs, "stores") == [("a", [0, 1, 2])]
        elif name == "b":
            assert flatten(recs, "stores") == [("b", [3, 4, 5])]
        else:
            # 2 chunks free; one more is needed: a's tail (a finished first, its head is the
            # most recent of its blocks), whose chunk id 2 is reused after the fresh 6 and 7.
            assert flatten(recs, "removed") == ext(eng, "a", range(2, 3))
            assert flatten(recs, "stores") == [("c", [6, 7, 2])]
    assert len(eng.manager.core) == TIER
    # a's head is still in the tier: a repeat of a loads 2 blocks (its tail block is gone).
    assert eng.scheduler.reset_prefix_cache()
    eng.add("a2", eng.requests["a"].prompt_token_ids)
    recs = eng.run()
    assert flatten(recs, "loads") == [("a2", [0, 1], 2)]
    assert eng.loads_checked == 2


def test_reset_prefix_cache_with_connector_empties_the_tier(model_dir: Path) -> None:
    eng = Engine(model_dir, kvoff_extra())
    p = prompt(20, 40)
    eng.add("r", p)
    eng.run()
    assert len(eng.manager.core) == 2
    assert eng.scheduler.reset_prefix_cache(reset_connector=True)
    assert len(eng.manager.core) == 0
    eng.add("r2", p)
    recs = eng.run()
    assert flatten(recs, "loads") == []
    assert flatten(recs, "stores") == [("r2", [0, 1])]  # ids start afresh after the reset


def test_preempted_request_flushes_its_store_and_loads_back_on_resume(model_dir: Path) -> None:
    # 7 usable GPU blocks for two requests of 40 prompt tokens that keep decoding: when both
    # need a 4th block, vLLM preempts the later one (b) and frees its blocks. Decode blocks are
    # stored too (offload_prompt_only=False), so b has a store in flight at that moment.
    eng = Engine(
        model_dir,
        kvoff_extra(cpu_bytes_to_use=16 * CHUNK_BYTES, offload_prompt_only=False),
        num_gpu_blocks=8,
    )
    eng.add("a", prompt(1, 40), max_tokens=60)
    eng.add("b", prompt(2, 40), max_tokens=40)
    recs = eng.run()
    (at,) = [i for i, r in enumerate(recs) if r.preempted]
    assert recs[at].preempted == ["b"]
    # The scheduler flushes b's store of its block 2 (created the step before): the harness
    # checks that kvoff's worker waited for it before the blocks were handed to a.
    assert recs[at - 1].stores == [("a", [4]), ("b", [5])]
    assert recs[at].flushed == [("store", "b", [5])]
    # b's store was waited for, so kvoff's worker reports it first; then a's.
    assert recs[at].stored == [*ext(eng, "b", range(2, 3)), *ext(eng, "a", range(2, 3))]
    # While b waits, a alone decodes on and stores each block it fills.
    assert flatten(recs[at + 1 :], "stores")[:3] == [("a", [6]), ("a", [7]), ("a", [8])]
    # b resumes after a finishes: the 3 blocks it had computed come back from the CPU tier
    # (its GPU copies were reused by a), byte for byte, and it then stores its next block.
    (back,) = [i for i, r in enumerate(recs) if r.loads]
    assert back > at
    assert recs[back].loads == [("b", [2, 3, 5], 3)]
    assert eng.loads_checked == 3
    assert flatten(recs, "stores") == [
        ("a", [0, 1]),
        ("b", [2, 3]),
        ("a", [4]),
        ("b", [5]),
        ("a", [6]),
        ("a", [7]),
        ("a", [8]),
        ("b", [9]),
    ]
    assert flatten(recs, "preempted") == ["b"]
    assert flatten(recs, "removed") == []
    assert eng.finished == ["a", "b"]
    assert len(eng.manager.core) == 10
    assert eng.manager.core.pinned == 0
