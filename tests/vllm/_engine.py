"""A vLLM engine without a model: vLLM's real Scheduler and OffloadingConnector (both roles),
driven step by step on CPU, with KV "computed" as per-block fingerprints.

What stands in for the model runner: each step, every block whose last token was computed gets
a fingerprint derived from its block hash (different per layer), and each step's output samples
a fixed token. Every load the worker finishes is checked against the fingerprints its blocks'
hashes predict, so a wrong or torn block fails the run. The worker role is always kvoff's worker
(vLLM's own refuses CPU tensors); ``spec_name`` picks the scheduler side's manager.

Each step is recorded as plain data (loads, stores, CPU-tier events) so two runs can be
compared step by step.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm.config import (
    CacheConfig,
    DeviceConfig,
    KVEventsConfig,
    KVTransferConfig,
    ModelConfig,
    SchedulerConfig,
    VllmConfig,
    set_current_vllm_config,
)
from vllm.distributed.kv_events import (
    BlockRemoved,
    BlockStored,
    EventPublisher,
)
from vllm.distributed.kv_transfer.kv_connector.v1 import KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.common import (
    OffloadingConnectorMetadata,
    OffloadingWorkerMetadata,
)
from vllm.distributed.kv_transfer.kv_connector.v1.offloading_connector import (
    OffloadingConnector,
)
from vllm.forward_context import ForwardContext
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    KVCacheTensor,
)
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from vllm import SamplingParams

BLOCK_SIZE = 16
LAYERS = ("model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn")
HEAD_SIZE = 32  # one layer's page: 2 * 16 tokens * 1 head * 32 * 2 bytes = 2048 bytes
CHUNK_BYTES = 4096  # both layers' pages: exactly one host page, so no padding
EOS = 2

# A Llama-shaped model small enough to describe by hand; vLLM reads only its config.
MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": HEAD_SIZE,
    "num_hidden_layers": len(LAYERS),
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float16",
    "bos_token_id": 1,
    "eos_token_id": EOS,
}


def write_model_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(MODEL_CONFIG))
    return path


class RecordingPublisher(EventPublisher):
    """A vLLM event publisher that keeps every event it is given, in order."""

    def __init__(self) -> None:
        super().__init__(0)
        self.events: list[Any] = []

    def publish(self, events: Any) -> None:
        self.events.extend(events.events)

    def shutdown(self) -> None:
        return


def fingerprint(block_hash: bytes, layer: int, nbytes: int) -> torch.Tensor:
    seed = hashlib.blake2b(bytes(block_hash) + bytes([layer]), digest_size=64).digest()
    reps = -(-nbytes // len(seed))
    return torch.frombuffer(bytearray(seed * reps)[:nbytes], dtype=torch.uint8)


@dataclass
class StepRecord:
    """What the offloading tier did in one step, in vLLM's own terms."""

    loads: list[tuple[str, list[int], int]] = field(default_factory=list)  # req, CPU ids, blocks
    stores: list[tuple[str, list[int]]] = field(default_factory=list)  # req, CPU ids
    stored: list[bytes] = field(default_factory=list)  # BlockStored hashes, medium CPU
    removed: list[bytes] = field(default_factory=list)  # BlockRemoved hashes, medium CPU


class Engine:
    def __init__(
        self,
        model_dir: Path,
        extra_config: dict[str, Any],
        num_gpu_blocks: int = 64,
        kv_connector: str = "OffloadingConnector",
        kv_connector_module_path: str | None = None,
        max_num_batched_tokens: int = 256,
    ) -> None:
        self.num_gpu_blocks = num_gpu_blocks
        vllm_config = self._config(
            model_dir, extra_config, kv_connector, kv_connector_module_path, max_num_batched_tokens
        )
        self.vllm_config = vllm_config
        spec = FullAttentionSpec(
            block_size=BLOCK_SIZE, num_kv_heads=1, head_size=HEAD_SIZE, dtype=torch.float16
        )
        self.page = spec.page_size_bytes
        kv_cache_config = KVCacheConfig(
            num_blocks=num_gpu_blocks,
            kv_cache_tensors=[
                KVCacheTensor(
                    size=self.page * num_gpu_blocks * len(LAYERS),
                    layers=list(LAYERS),
                    layer_stride=self.page * num_gpu_blocks,
                    block_stride=self.page,
                )
            ],
            kv_cache_groups=[KVCacheGroupSpec(list(LAYERS), spec)],
        )
        vllm_config.cache_config.num_gpu_blocks = num_gpu_blocks
        self.scheduler = Scheduler(
            vllm_config=vllm_config,
            kv_cache_config=kv_cache_config,
            log_stats=True,
            structured_output_manager=StructuredOutputManager(vllm_config),
            block_size=BLOCK_SIZE,
        )
        # KV events are enabled with vLLM's null publisher; the scheduler publishes through
        # this attribute, so a recording publisher there sees exactly what a real one would.
        self.publisher = RecordingPublisher()
        self.scheduler.kv_event_publisher = self.publisher
        # The worker role always runs kvoff's worker: vLLM's CPU worker needs CUDA.
        worker_config = copy.deepcopy(vllm_config)
        worker_extra = worker_config.kv_transfer_config.kv_connector_extra_config
        worker_extra["spec_name"] = "KvoffOffloadingSpec"
        worker_extra["spec_module_path"] = "kvoff.vllm"
        worker_cls = type(self.scheduler.connector)
        self.worker_connector = worker_cls(worker_config, KVConnectorRole.WORKER, kv_cache_config)
        self.kv = {
            name: torch.zeros(num_gpu_blocks, 2, BLOCK_SIZE, 1, HEAD_SIZE, dtype=torch.float16)
            for name in LAYERS
        }
        with set_current_vllm_config(worker_config):
            self.worker_connector.register_kv_caches(self.kv)
        self._ctx = ForwardContext(no_compile_layers={}, attn_metadata={}, slot_mapping={})
        init_none_hash(sha256)
        self._hasher = get_request_block_hasher(BLOCK_SIZE, sha256)
        self.requests: dict[str, Request] = {}
        self.finished: list[str] = []
        self.kv_stats: list[Any] = []
        self.loads_checked = 0

    @staticmethod
    def _config(
        model_dir: Path,
        extra: dict[str, Any],
        kv_connector: str,
        module_path: str | None,
        max_tokens: int,
    ) -> VllmConfig:
        model = ModelConfig(model=str(model_dir), skip_tokenizer_init=True, dtype="float16", seed=0)
        sched = SchedulerConfig(
            max_num_seqs=16,
            max_num_batched_tokens=max_tokens,
            max_model_len=2048,
            enable_chunked_prefill=True,
            is_encoder_decoder=False,
        )
        cache = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=True)
        cache.kv_cache_layout = "LBNHC"  # what the connector's layout resolution leaves
        return VllmConfig(
            model_config=model,
            scheduler_config=sched,
            cache_config=cache,
            kv_transfer_config=KVTransferConfig(
                kv_connector=kv_connector,
                kv_connector_module_path=module_path,
                kv_role="kv_both",
                kv_connector_extra_config=dict(extra),
            ),
            kv_events_config=KVEventsConfig(enable_kv_cache_events=True, publisher="null"),
            device_config=DeviceConfig("cpu"),
        )

    @property
    def connector(self) -> OffloadingConnector:
        c = self.scheduler.connector
        assert isinstance(c, OffloadingConnector)
        return c

    @property
    def manager(self) -> Any:
        assert self.connector.connector_scheduler is not None
        return self.connector.connector_scheduler.manager

    def add(self, req_id: str, tokens: Iterable[int], max_tokens: int = 1) -> Request:
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        params.update_from_generation_config({}, EOS)
        req = Request(
            request_id=req_id,
            prompt_token_ids=list(tokens),
            sampling_params=params,
            pooling_params=None,
            block_hasher=self._hasher,
        )
        self.requests[req_id] = req
        self.scheduler.add_request(req)
        return req

    # ----------------------------------------------------------------- one step

    def _write_computed(self, req: Request, start: int, end: int) -> None:
        """Fingerprint every block whose last token lies in [start, end)."""
        (block_ids,) = self.scheduler.kv_cache_manager.get_block_ids(req.request_id)
        for b in range(start // BLOCK_SIZE, end // BLOCK_SIZE):
            if (b + 1) * BLOCK_SIZE <= end and b < len(req.block_hashes):
                for li, name in enumerate(LAYERS):
                    row = self.kv[name][block_ids[b]].view(torch.uint8).view(-1)
                    row.copy_(fingerprint(req.block_hashes[b], li, row.numel()))

    def _check_load(self, req: Request, gpu_ids: list[int], first_index: int) -> None:
        for i, gid in enumerate(gpu_ids):
            h = req.block_hashes[first_index + i]
            for li, name in enumerate(LAYERS):
                row = self.kv[name][gid].view(torch.uint8).view(-1)
                expect = fingerprint(h, li, row.numel())
                assert torch.equal(row, expect), (
                    f"request {req.request_id}: GPU block {gid} (index {first_index + i}) "
                    f"layer {li} does not hold the KV of its hash after the load"
                )
        self.loads_checked += len(gpu_ids)

    def step(self) -> StepRecord:
        rec = StepRecord()
        out = self.scheduler.schedule()
        meta = out.kv_connector_metadata
        assert isinstance(meta, OffloadingConnectorMetadata)
        for job_id in sorted(meta.load_jobs):
            job = meta.load_jobs[job_id]
            ids = [int(x) for x in job.src_spec.block_ids]
            rec.loads.append((job.req_id, ids, len(job.dst_spec.block_ids)))
        for job_id in sorted(meta.store_jobs):
            job = meta.store_jobs[job_id]
            rec.stores.append((job.req_id, [int(x) for x in job.dst_spec.block_ids]))

        w = self.worker_connector
        w.handle_preemptions(meta)
        w.bind_connector_metadata(meta)
        w.start_load_kv(self._ctx)
        for job in meta.load_jobs.values():  # CPU transfers finish at submission
            req = self.requests[job.req_id]
            self._check_load(
                req, [int(x) for x in job.dst_spec.block_ids], job.dst_spec.block_indices[0]
            )
        # "Compute": the tokens scheduled this step.
        for req_id, n in out.num_scheduled_tokens.items():
            req = self.requests[req_id]
            self._write_computed(req, req.num_computed_tokens - n, req.num_computed_tokens)
        w.wait_for_save()
        sending, recving = w.get_finished(out.finished_req_ids)
        worker_meta = w.build_connector_worker_meta() or OffloadingWorkerMetadata()
        worker_stats = w.get_kv_connector_stats()
        w.clear_connector_metadata()

        ids = list(out.num_scheduled_tokens)
        sampled = []
        for req_id in ids:
            req = self.requests[req_id]
            sampled.append([7] if req.num_computed_tokens >= req.num_tokens else [])
        mro = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={r: i for i, r in enumerate(ids)},
            sampled_token_ids=sampled,
            kv_connector_output=KVConnectorOutput(
                finished_sending=sending,
                finished_recving=recving,
                kv_connector_worker_meta=worker_meta,
                kv_connector_stats=worker_stats,
            ),
        )
        n_events = len(self.publisher.events)
        engine_outputs = self.scheduler.update_from_output(out, mro)
        for eo in engine_outputs.values():
            stats = eo.scheduler_stats
            if stats is not None and stats.kv_connector_stats:
                self.kv_stats.append(stats.kv_connector_stats)
            for o in eo.outputs:
                if o.finish_reason is not None:
                    self.finished.append(o.request_id)
        for ev in self.publisher.events[n_events:]:
            if isinstance(ev, BlockStored) and ev.medium == "CPU":
                rec.stored.extend(ev.block_hashes)
            elif isinstance(ev, BlockRemoved) and ev.medium == "CPU":
                rec.removed.extend(ev.block_hashes)
        return rec

    def run(self, max_steps: int = 200) -> list[StepRecord]:
        """Step until no request is left and the connector has no job in flight."""
        records = []
        for _ in range(max_steps):
            records.append(self.step())
            if not self.scheduler.has_requests() and not self.connector.has_pending_push_work():
                return records
        raise AssertionError(f"engine still busy after {max_steps} steps")
