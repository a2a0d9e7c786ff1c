"""kvoff's tier events reach vLLM's event publisher exactly as vLLM's own CPU tier's do.

vLLM's scheduler drains the connector's ``take_events()`` (the manager's ``OffloadingEvent``s,
translated by vLLM's ``OffloadingEventsTracker``) into each step's ``KVEventBatch``; the
harness's publisher records the batches. Compared here as whole ``BlockStored`` /
``BlockRemoved`` objects, medium ``"CPU"``, against a run with vLLM's ``CPUOffloadingSpec``,
with vLLM's placeholder payload and with ``self_describing_kv_events``; and the failed-store
removal, which vLLM's tracker does not publish, against the event vLLM's own manager emits for
the same calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm.v1.kv_offload.base", reason="needs vLLM 0.33.0 (pip install 'kvoff[vllm]')"
)

from _engine import CHUNK_BYTES, Engine
from vllm.distributed.kv_events import BlockRemoved, BlockStored
from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash
from vllm.v1.kv_offload.base import ReqContext, make_offload_key
from vllm.v1.kv_offload.cpu.manager import CPUOffloadingManager

TIER = 8  # chunks
KVOFF = {"spec_name": "KvoffOffloadingSpec", "spec_module_path": "kvoff.vllm"}
VLLM_CPU = {"spec_name": "CPUOffloadingSpec"}


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 131 + i * 7) % 900 + 50 for i in range(n)]


def cpu_events(eng: Engine) -> list[Any]:
    return [e for e in eng.publisher.events if getattr(e, "medium", None) == "CPU"]


def three_requests(eng: Engine) -> list[Any]:
    """a, b, c of 3 full blocks each into an 8-chunk tier: c's store evicts a's tail."""
    for i, name in enumerate("abc"):
        eng.add(name, prompt(10 + i, 3 * 16 + 5))
        eng.run()
    return cpu_events(eng)


def h(eng: Engine, req_id: str, block: int) -> Any:
    return maybe_convert_block_hash(eng.requests[req_id].block_hashes[block])


def placeholder_stored(block_hash: Any) -> BlockStored:
    # vLLM's payload for a chunk when self-describing events are off: the hash alone.
    return BlockStored(
        block_hashes=[block_hash],
        parent_block_hash=None,
        token_ids=[],
        block_size=0,
        lora_id=None,
        medium="CPU",
        lora_name=None,
        group_idx=0,
    )


def test_stored_and_removed_events_are_exact(model_dir: Path) -> None:
    eng = Engine(model_dir, {**KVOFF, "cpu_bytes_to_use": TIER * CHUNK_BYTES})
    got = three_requests(eng)
    stored = [e for e in got if isinstance(e, BlockStored)]
    removed = [e for e in got if isinstance(e, BlockRemoved)]
    # One BlockStored per chunk, in the order the stores completed; c's first.
    assert sorted(map(repr, stored)) == sorted(
        repr(placeholder_stored(h(eng, r, b))) for r in "abc" for b in range(3)
    )
    assert removed == [BlockRemoved(block_hashes=[h(eng, "a", 2)], medium="CPU", group_idx=0)]
    # The removal comes after b's stores and before c's: prepare_store evicts, complete_store
    # announces.
    at = got.index(removed[0])
    assert {e.block_hashes[0] for e in got[:at]} == {h(eng, r, b) for r in "ab" for b in range(3)}
    assert {e.block_hashes[0] for e in got[at + 1 :]} == {h(eng, "c", b) for b in range(3)}


@pytest.mark.parametrize("self_describing", [False, True])
def test_events_equal_vllms_own_cpu_tier(model_dir: Path, self_describing: bool) -> None:
    more = {"cpu_bytes_to_use": TIER * CHUNK_BYTES, "self_describing_kv_events": self_describing}
    theirs = three_requests(Engine(model_dir, {**VLLM_CPU, **more}))
    ours = three_requests(Engine(model_dir, {**KVOFF, **more}))
    assert len(ours) == 10  # 9 stored, 1 removed
    assert ours == theirs
    if self_describing:  # the payload then carries each block's tokens and parent
        first = next(e for e in ours if isinstance(e, BlockStored) and e.parent_block_hash)
        assert first.block_size == 16 and len(first.token_ids) == 16


def test_failed_store_removal_is_vllms_and_is_not_published(model_dir: Path) -> None:
    eng = Engine(
        model_dir,
        {"cpu_bytes_to_use": TIER * CHUNK_BYTES},
        kv_connector="KvoffConnector",
        kv_connector_module_path="kvoff.vllm",
    )
    eng.record_manager_events()
    eng.fail_next_transfer(rank=0, store=True)
    eng.add("a", prompt(1, 40))
    eng.run()
    assert cpu_events(eng) == []
    (ours,) = eng.manager_events
    # vLLM's own manager, given the calls the connector made (store two chunks, fail them).
    req = eng.requests["a"]
    keys = [make_offload_key(req.block_hashes[i], 0) for i in range(2)]
    vllm_manager = CPUOffloadingManager(num_chunks=TIER, enable_events=True)
    ctx = ReqContext(req_id="a")
    vllm_manager.on_new_request(ctx)
    assert vllm_manager.prepare_store(keys, ctx) is not None
    vllm_manager.complete_store(set(keys), ctx, success=False)
    (theirs,) = vllm_manager.take_events()
    fields = ("medium", "removed", "locality", "ownership", "removal_expected", "metadata_only")
    assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert (ours.removed, ours.metadata_only) == (True, True)
    assert sorted(ours.keys) == sorted(theirs.keys) == sorted(keys)
