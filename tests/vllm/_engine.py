"""A vLLM engine without a model: vLLM's real Scheduler and OffloadingConnector (both roles),
driven step by step on CPU, with KV "computed" as per-block fingerprints.

What stands in for the model runner: each step, every block whose last token was computed gets
a fingerprint derived from its block hash (different per layer), and each step's output samples
a fixed token. Every load the worker finishes is checked against the fingerprints its blocks'
hashes predict, so a wrong or torn block fails the run. The worker role is always kvoff's worker
(vLLM's own refuses CPU tensors); ``spec_name`` picks the scheduler side's manager.

``tp=2`` runs two worker ranks as vLLM's tensor parallelism does: one worker-side connector per
rank over its own KV caches (each rank's fingerprints differ), the scheduler expecting
``world_size`` reports per job, and the ranks' outputs combined by vLLM's ``KVOutputAggregator``.
A rank can be held back for a step (``step(hold=...)``): it runs its transfers but reports them
only at its next unheld step, as a slow rank would.

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
    ParallelConfig,
    SchedulerConfig,
    VllmConfig,
    set_current_vllm_config,
)
from vllm.distributed.kv_events import (
    BlockRemoved,
    BlockStored,
    EventPublisher,
)
from vllm.distributed.kv_transfer.kv_connector.utils import KVOutputAggregator
from vllm.distributed.kv_transfer.kv_connector.v1 import KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.offloading.common import (
    OffloadingConnectorMetadata,
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


def fingerprint(block_hash: bytes, layer: int, nbytes: int, rank: int = 0) -> torch.Tensor:
    # Rank 0's seed is the one-rank engine's, so one- and two-rank runs hold the same rank-0 KV.
    tag = bytes([layer]) + (bytes([rank]) if rank else b"")
    seed = hashlib.blake2b(bytes(block_hash) + tag, digest_size=64).digest()
    reps = -(-nbytes // len(seed))
    return torch.frombuffer(bytearray(seed * reps)[:nbytes], dtype=torch.uint8)


@dataclass
class StepRecord:
    """What the offloading tier did in one step, in vLLM's own terms."""

    loads: list[tuple[str, list[int], int]] = field(default_factory=list)  # req, CPU ids, blocks
    stores: list[tuple[str, list[int]]] = field(default_factory=list)  # req, CPU ids
    stored: list[bytes] = field(default_factory=list)  # BlockStored hashes, medium CPU
    removed: list[bytes] = field(default_factory=list)  # BlockRemoved hashes, medium CPU
    preempted: list[str] = field(default_factory=list)  # requests preempted by this schedule
    load_errors: list[int] = field(default_factory=list)  # GPU blocks reported invalid
    # Jobs the scheduler asked the workers to flush: ("load" | "store", req, CPU ids).
    flushed: list[tuple[str, str, list[int]]] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        model_dir: Path,
        extra_config: dict[str, Any],
        num_gpu_blocks: int = 64,
        kv_connector: str = "OffloadingConnector",
        kv_connector_module_path: str | None = None,
        max_num_batched_tokens: int = 256,
        tp: int = 1,
        max_num_seqs: int = 16,
        kv_load_failure_policy: str = "fail",
    ) -> None:
        self.num_gpu_blocks = num_gpu_blocks
        self.tp = tp
        vllm_config = self._config(
            model_dir,
            extra_config,
            kv_connector,
            kv_connector_module_path,
            max_num_batched_tokens,
            tp,
            max_num_seqs,
            kv_load_failure_policy,
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
        # The worker role always runs kvoff's worker: vLLM's CPU worker needs CUDA. One
        # worker-side connector per rank, each over its own caches, as each TP rank holds its own.
        worker_cls = type(self.scheduler.connector)
        self.worker_connectors: list[Any] = []
        self.kvs: list[dict[str, torch.Tensor]] = []
        for rank in range(tp):
            worker_config = copy.deepcopy(vllm_config)
            worker_config.parallel_config.rank = rank
            worker_extra = worker_config.kv_transfer_config.kv_connector_extra_config
            worker_extra["spec_name"] = "KvoffOffloadingSpec"
            worker_extra["spec_module_path"] = "kvoff.vllm"
            w = worker_cls(worker_config, KVConnectorRole.WORKER, kv_cache_config)
            kv = {
                name: torch.zeros(num_gpu_blocks, 2, BLOCK_SIZE, 1, HEAD_SIZE, dtype=torch.float16)
                for name in LAYERS
            }
            with set_current_vllm_config(worker_config):
                w.register_kv_caches(kv)
            self.worker_connectors.append(w)
            self.kvs.append(kv)
        self.worker_connector = self.worker_connectors[0]
        self.kv = self.kvs[0]
        self._aggregator = KVOutputAggregator(expected_finished_count=tp) if tp > 1 else None
        # What the worker reported in each step, per rank: vLLM's TransferResults.
        self.transfer_results: list[list[Any]] = [[] for _ in range(tp)]
        self.manager_events: list[Any] = []  # raw OffloadingEvents, with record_manager_events()
        self.load_gpu_blocks: list[tuple[str, list[int]]] = []  # every load: req, GPU ids
        self._store_jobs: dict[int, tuple[str, list[int]]] = {}  # every store job: req, CPU ids
        self._jobs_seen: dict[int, tuple[str, str, list[int]]] = {}  # every job: kind, req, ids
        # Per rank: load jobs submitted, not yet reported -> (request, GPU ids, first index).
        self._unchecked: list[dict[int, tuple[str, list[int], int]]] = [{} for _ in range(tp)]
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
        tp: int,
        max_num_seqs: int,
        load_failure_policy: str,
    ) -> VllmConfig:
        model = ModelConfig(model=str(model_dir), skip_tokenizer_init=True, dtype="float16", seed=0)
        sched = SchedulerConfig(
            max_num_seqs=max_num_seqs,
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
                kv_load_failure_policy=load_failure_policy,
            ),
            kv_events_config=KVEventsConfig(enable_kv_cache_events=True, publisher="null"),
            device_config=DeviceConfig("cpu"),
            parallel_config=ParallelConfig(tensor_parallel_size=tp),
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

    def worker(self, rank: int = 0) -> Any:
        """Rank ``rank``'s ``KvoffOffloadingWorker`` (the object behind vLLM's worker side)."""
        return self.worker_connectors[rank].connector_worker.worker

    def record_manager_events(self) -> None:
        """Keep a copy of every raw ``OffloadingEvent`` the scheduler drains from the manager
        (it still gets each one): vLLM's event tracker drops some (``metadata_only``)."""
        manager = self.manager
        drain = manager.take_events

        def recording() -> list[Any]:
            events = list(drain())
            self.manager_events.extend(events)
            return events

        manager.take_events = recording

    def fail_next_transfer(self, rank: int, store: bool) -> None:
        """Make rank ``rank``'s next store (or load) fail inside kvoff's copy engine, as a
        failing copy would: the engine catches the error and reports ``success=False``."""
        host = self.worker(rank).engine._host
        assert host is not None, "the CPU engine runs the host copier"
        run_job = host.run_job

        def failing(plan: Any, is_store: bool) -> None:
            if is_store == store:
                host.run_job = run_job  # once
                raise RuntimeError("injected copy failure")
            run_job(plan, is_store)

        host.run_job = failing

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
        """Fingerprint every block whose last token lies in [start, end), on every rank."""
        (block_ids,) = self.scheduler.kv_cache_manager.get_block_ids(req.request_id)
        for b in range(start // BLOCK_SIZE, end // BLOCK_SIZE):
            if (b + 1) * BLOCK_SIZE <= end and b < len(req.block_hashes):
                for rank, kv in enumerate(self.kvs):
                    for li, name in enumerate(LAYERS):
                        row = kv[name][block_ids[b]].view(torch.uint8).view(-1)
                        row.copy_(fingerprint(req.block_hashes[b], li, row.numel(), rank))

    def _check_load(
        self, req: Request, gpu_ids: list[int], first_index: int, rank: int = 0
    ) -> None:
        kv = self.kvs[rank]
        for i, gid in enumerate(gpu_ids):
            h = req.block_hashes[first_index + i]
            for li, name in enumerate(LAYERS):
                row = kv[name][gid].view(torch.uint8).view(-1)
                expect = fingerprint(h, li, row.numel(), rank)
                assert torch.equal(row, expect), (
                    f"request {req.request_id}: rank {rank} GPU block {gid} (index "
                    f"{first_index + i}) layer {li} does not hold the KV of its hash after the load"
                )
        self.loads_checked += len(gpu_ids)

    def step(self, hold: frozenset[int] = frozenset()) -> StepRecord:
        rec = StepRecord()
        out = self.scheduler.schedule()
        rec.preempted = sorted(out.preempted_req_ids or ())
        meta = out.kv_connector_metadata
        assert isinstance(meta, OffloadingConnectorMetadata)
        for job_id in sorted(meta.load_jobs):
            job = meta.load_jobs[job_id]
            ids = [int(x) for x in job.src_spec.block_ids]
            rec.loads.append((job.req_id, ids, len(job.dst_spec.block_ids)))
            self._jobs_seen[job_id] = ("load", job.req_id, ids)
            self.load_gpu_blocks.append((job.req_id, [int(x) for x in job.dst_spec.block_ids]))
        for job_id in sorted(meta.store_jobs):
            job = meta.store_jobs[job_id]
            rec.stores.append((job.req_id, [int(x) for x in job.dst_spec.block_ids]))
            self._store_jobs[job_id] = rec.stores[-1]
            self._jobs_seen[job_id] = ("store", *rec.stores[-1])
        rec.flushed = [self._jobs_seen[j] for j in sorted(meta.jobs_to_flush or ())]

        # Every rank gets the same metadata, as the scheduler broadcasts it; each must see the
        # jobs as sent (handle_preemptions pops flushed stores from the object it is given).
        metas = [meta] + [copy.deepcopy(meta) for _ in range(self.tp - 1)]
        # "Compute" happens between the loads and the saves; the loads are checked first.
        kv_outputs = []
        for rank in range(self.tp):
            w = self.worker_connectors[rank]
            m = metas[rank]
            w.handle_preemptions(m)
            # vLLM frees a preempted request's blocks after this call: what it flushes must be
            # written by now (kvoff's worker waited for it).
            unflushed = set(m.jobs_to_flush or ()) & self.worker(rank).in_flight()
            assert not unflushed, f"rank {rank}: jobs {sorted(unflushed)} not flushed"
            w.bind_connector_metadata(m)
            w.start_load_kv(self._ctx)
            for job_id, job in m.load_jobs.items():
                ids = [int(x) for x in job.dst_spec.block_ids]
                self._unchecked[rank][job_id] = (job.req_id, ids, job.dst_spec.block_indices[0])
        for req_id, n in out.num_scheduled_tokens.items():
            req = self.requests[req_id]
            self._write_computed(req, req.num_computed_tokens - n, req.num_computed_tokens)
        for rank in range(self.tp):
            kv_outputs.append(self._report(rank, out, rank in hold))

        ids = list(out.num_scheduled_tokens)
        sampled = []
        for req_id in ids:
            req = self.requests[req_id]
            sampled.append([7] if req.num_computed_tokens >= req.num_tokens else [])
        mros = [
            ModelRunnerOutput(
                req_ids=ids,
                req_id_to_index={r: i for i, r in enumerate(ids)},
                sampled_token_ids=sampled,
                kv_connector_output=kv_out,
            )
            for kv_out in kv_outputs
        ]
        if self._aggregator is None:
            mro = mros[0]
        else:
            aggregated = self._aggregator.aggregate(mros)
            assert aggregated is not None
            mro = aggregated
        assert mro.kv_connector_output is not None
        rec.load_errors = sorted(mro.kv_connector_output.invalid_block_ids)
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

    def _report(self, rank: int, out: Any, hold: bool) -> KVConnectorOutput:
        """One rank's end of step: saves queued, finished jobs collected, its output built."""
        w = self.worker_connectors[rank]
        w.wait_for_save()
        if hold:  # a slow rank: its transfers ran; it reports them at its next unheld step
            w.clear_connector_metadata()
            return KVConnectorOutput()
        worker = self.worker(rank)
        finished = worker.get_finished
        results: list[Any] = []

        def recording_get_finished() -> list[Any]:
            got = finished()
            results.extend(got)
            return got

        worker.get_finished = recording_get_finished
        try:
            sending, recving = w.get_finished(out.finished_req_ids)
        finally:
            del worker.get_finished
        self.transfer_results[rank].extend(results)
        # Each load is checked once its rank reports it done (a failed one left its GPU blocks
        # as they were). Nothing writes a loading request's blocks before then: they hold
        # computed tokens, and the "compute" writes only the blocks of scheduled ones.
        for r in results:
            load = self._unchecked[rank].pop(r.job_id, None)
            if load is not None and r.success:
                req_id, ids, first = load
                self._check_load(self.requests[req_id], ids, first, rank)
        output = KVConnectorOutput(
            finished_sending=sending,
            finished_recving=recving,
            kv_connector_worker_meta=w.build_connector_worker_meta(),
            kv_connector_stats=w.get_kv_connector_stats(),
            invalid_block_ids=w.get_block_ids_with_load_errors(),
        )
        w.clear_connector_metadata()
        return output

    def run(self, max_steps: int = 200) -> list[StepRecord]:
        """Step until no request is left and the connector has no job in flight."""
        records = []
        for _ in range(max_steps):
            records.append(self.step())
            if not self.scheduler.has_requests() and not self.connector.has_pending_push_work():
                return records
        raise AssertionError(f"engine still busy after {max_steps} steps")
