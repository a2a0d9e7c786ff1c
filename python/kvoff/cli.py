"""``kvoff`` command line: ``kvoff bench`` replays a multi-turn serving workload."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from kvoff.bench.presets import PRESETS, ModelShape
from kvoff.cli_options import (
    MAX_CONVERSATIONS,
    MAX_SECONDS,
    MAX_SEED,
    MAX_TP,
    UsageError,
    address_option,
    check_json_path,
    check_kv_fits,
    cpu_tier_blocks,
    float_option,
    int_option,
    preset_option,
    remote_option,
)
from kvoff.errors import KvoffError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from kvoff._core import OffloadingConnectorStats
    from kvoff.bench.engine import SimulatedEngine
    from kvoff.bench.report import Summary
    from kvoff.metrics import MetricsServer


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage dump: the message already names the bad argument.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Every option's value is checked here, so a bad one ends the command before anything
    is allocated or run."""
    parser = _Parser(prog="kvoff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "bench",
        help="replay a multi-turn serving workload through the scheduler, worker and metrics",
        description="Replay conversations that share system prompts and grow turn by turn "
        "through kvoff's scheduler and worker halves on real tensors (CUDA when present), "
        "then print a summary.",
    )
    b.add_argument(
        "--preset", type=preset_option, default="small", help=f"model shape: {', '.join(PRESETS)}"
    )
    b.add_argument(
        "--cpu-gb",
        type=float_option("--cpu-gb"),
        default=1.0,
        help="CPU tier size in GiB, at most the machine's memory (default 1: small enough "
        "that the default run evicts)",
    )
    b.add_argument(
        "--gpu-blocks",
        type=int_option("--gpu-blocks"),
        default=2048,
        help="GPU KV blocks the simulated engine owns (default 2048)",
    )
    b.add_argument(
        "--gpu-block-size",
        type=int_option("--gpu-block-size"),
        default=16,
        help="tokens per GPU block (default 16)",
    )
    b.add_argument(
        "--cpu-block-size",
        type=int_option("--cpu-block-size"),
        default=64,
        help="tokens per CPU block, a multiple of the GPU block size (default 64)",
    )
    b.add_argument("--policy", choices=("lru", "arc"), default="lru")
    run = b.add_mutually_exclusive_group()
    run.add_argument(
        "--requests",
        type=int_option("--requests"),
        default=None,
        help="requests to replay (default 400 unless --duration is given)",
    )
    run.add_argument(
        "--duration",
        type=float_option("--duration", high=MAX_SECONDS),
        default=None,
        help=f"admit requests for this many seconds (at most {MAX_SECONDS}), then drain",
    )
    b.add_argument(
        "--conversations",
        type=int_option("--conversations", high=MAX_CONVERSATIONS),
        default=32,
        help=f"conversations active at once (default 32, at most {MAX_CONVERSATIONS:,})",
    )
    b.add_argument(
        "--seed",
        type=int_option("--seed", low=0, high=MAX_SEED),
        default=0,
        help="workload seed, 0..2**64-1 (default 0)",
    )
    b.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    b.add_argument(
        "--tp",
        type=int_option("--tp", high=MAX_TP),
        default=1,
        help="tensor-parallel ranks: one scheduler and this many worker processes, each with "
        "its share of the KV heads on a GPU of its own (CPU tensors when there are fewer GPUs "
        "and --device is not cuda); the preset's KV heads must divide (default 1: the worker "
        "half runs in this process)",
    )
    b.add_argument(
        "--remote",
        metavar="URL",
        default=None,
        help="a remote tier behind the CPU tier, shared with every bench (or engine) using "
        "the same server: redis://[user:password@]host:port/db, rediss:// (TLS), "
        "redis+cluster://host:port; needs pip install 'kvoff[remote]'",
    )
    b.add_argument(
        "--tier-upfront",
        action="store_true",
        help="allocate (pin) the whole CPU tier before serving; by default it is pinned in "
        "the background and the tier's usable blocks grow while the engine already serves",
    )
    b.add_argument("--json", metavar="PATH", help="also write the summary as JSON ('-': stdout)")
    b.add_argument(
        "--metrics-port",
        type=int_option("--metrics-port", high=65535),
        default=None,
        help="serve Prometheus /metrics on this port while running",
    )
    b.add_argument(
        "--metrics-addr",
        type=address_option,
        default="127.0.0.1",
        help="address to serve /metrics on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    b.add_argument(
        "--linger",
        type=float_option("--linger", high=MAX_SECONDS, low_open=False),
        default=0.0,
        help=f"keep serving /metrics this many seconds after the run (at most {MAX_SECONDS})",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


class _Progress:
    """A one-line progress bar on stderr, redrawn at most five times a second."""

    def __init__(self, total: float, unit: str, out: TextIO, enabled: bool) -> None:
        self.total, self.unit, self.out, self.enabled = total, unit, out, enabled
        self._last = 0.0

    def update(self, done: float, note: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        frac = min(done / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(frac * 30)
        self.out.write(f"\r[{bar:<30}] {done:,.0f}/{self.total:,.0f} {self.unit}  {note}   ")
        self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


@dataclass(frozen=True)
class _Plan:
    """What the options resolve to, every one checked before anything is allocated."""

    shape: ModelShape
    device: str
    num_cpu_blocks: int
    cpu_block_bytes: int
    num_requests: int | None
    tp: int
    # --remote, parsed; its redacted form is the only one ever shown.
    remote_url: str | None = None
    remote_shown: str | None = None


def _plan(args: argparse.Namespace) -> _Plan:
    import torch

    shape = PRESETS[args.preset]
    if args.cpu_block_size % args.gpu_block_size:
        raise UsageError(
            f"--cpu-block-size {args.cpu_block_size} is not a multiple of "
            f"--gpu-block-size {args.gpu_block_size}"
        )
    if args.linger and args.metrics_port is None:
        raise UsageError("--linger keeps serving /metrics after the run: it needs --metrics-port")
    tp = args.tp
    if shape.num_kv_heads % tp:
        raise UsageError(
            f"--tp {tp}: preset {shape.name} has {shape.num_kv_heads} KV heads, which do not "
            f"split {tp} ways"
        )
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "auto":
        device = "cuda" if gpus >= tp else "cpu"
    elif args.device == "cuda" and not gpus:
        raise UsageError("--device cuda: no CUDA device is available")
    elif args.device == "cuda" and gpus < tp:
        raise UsageError(f"--device cuda --tp {tp}: one GPU per rank, but only {gpus} found")
    else:
        device = args.device
    cpu_block_bytes = args.cpu_block_size * shape.bytes_per_token()
    num_cpu_blocks = cpu_tier_blocks(args.cpu_gb, cpu_block_bytes, shape.name)
    kv_bytes = args.gpu_blocks * args.gpu_block_size * shape.bytes_per_token()
    check_kv_fits(
        args.gpu_blocks,
        args.gpu_block_size,
        # Each GPU holds its rank's share of the heads; CPU tensors all share host memory.
        kv_bytes=kv_bytes if device == "cpu" else kv_bytes // tp,
        tier_bytes=num_cpu_blocks * cpu_block_bytes,
        kv_on_cpu=device == "cpu",
        gpu_memory_bytes=(
            torch.cuda.get_device_properties(torch.device(device)).total_memory
            if device == "cuda"
            else None
        ),
    )
    remote_shown = None if args.remote is None else remote_option(args.remote)
    if args.json is not None:
        check_json_path(args.json)  # last: it creates (and removes) the file
    num_requests = args.requests if args.requests or args.duration else 400
    return _Plan(
        shape, device, num_cpu_blocks, cpu_block_bytes, num_requests, tp, args.remote, remote_shown
    )


def _start_server(args: argparse.Namespace, registry: CollectorRegistry) -> MetricsServer | None:
    from kvoff.metrics import (
        AddressUnavailableError,
        MetricsServerError,
        PortInUseError,
        start_metrics_server,
    )

    if args.metrics_port is None:
        return None
    try:
        return start_metrics_server(args.metrics_port, args.metrics_addr, registry=registry)
    except PortInUseError as e:
        raise UsageError(f"--metrics-port {args.metrics_port}: {e.strerror}") from None
    except AddressUnavailableError as e:
        raise UsageError(f"--metrics-addr {args.metrics_addr}: {e.strerror}") from None
    except MetricsServerError as e:  # the OS refusing the bind for another reason
        raise UsageError(
            f"--metrics-addr {args.metrics_addr} --metrics-port {args.metrics_port}: {e.strerror}"
        ) from None
    except KvoffError as e:  # an address that is no host name at all
        raise UsageError(f"--metrics-addr: {e}") from None


def _write_json(path: str, text: str) -> str | None:
    """Write the JSON summary; the error line on failure (the summary then goes to stdout,
    so a run's result is never lost to a full disk or a directory removed meanwhile)."""
    if path == "-":
        print(text)
        return None
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except (OSError, ValueError) as e:  # ValueError: what the path check cannot foresee
        print(text)
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e)
        return f"--json {path}: cannot write the summary ({reason}); it is on stdout instead"
    return None


def _bench(args: argparse.Namespace) -> int:
    # Imported here, not at the top, so that `kvoff --help` imports neither torch nor the
    # worker half.
    from prometheus_client import CollectorRegistry

    from kvoff._core import OffloadingConnectorStats
    from kvoff.bench.engine import EngineConfig, RankSnapshots, SimulatedEngine
    from kvoff.bench.ranks import RANK_EXIT_ENV, parse_exit_hook
    from kvoff.bench.report import render
    from kvoff.metrics import OffloadPromMetrics

    plan = _plan(args)
    shape, device = plan.shape, plan.device
    registry = CollectorRegistry()
    labels = {"model_name": shape.name}
    exporter = OffloadPromMetrics(registry=registry, labels=labels, vllm_compatible=True)
    total = OffloadingConnectorStats()
    # With --tp N each rank's own figures too, as engine=<rank> under kvoff_rank_*.
    ranks = range(plan.tp) if plan.tp > 1 else range(0)
    rank_totals = {r: OffloadingConnectorStats() for r in ranks}
    rank_exporter = (
        OffloadPromMetrics(
            registry=registry, labels=labels, namespace="kvoff_rank", engines=map(str, ranks)
        )
        if plan.tp > 1
        else None
    )

    def on_snapshot(snap: OffloadingConnectorStats, rank_snaps: RankSnapshots) -> None:
        exporter.observe(snap, engine="0")
        total.aggregate(snap)
        for rank, rank_snap in rank_snaps:
            rank_totals[rank].aggregate(rank_snap)
            if rank_exporter is not None:
                rank_exporter.observe(rank_snap, engine=rank)

    cfg = EngineConfig(
        shape=shape,
        gpu_blocks=args.gpu_blocks,
        num_cpu_blocks=plan.num_cpu_blocks,
        gpu_block_size=args.gpu_block_size,
        cpu_block_size=args.cpu_block_size,
        policy=args.policy,
        device=device,
        seed=args.seed,
        tp=plan.tp,
        exit_hook=parse_exit_hook(os.environ.get(RANK_EXIT_ENV)) if plan.tp > 1 else None,
        remote_url=plan.remote_url,
        tier_in_background=not args.tier_upfront,
    )
    try:
        engine = SimulatedEngine(cfg, on_snapshot=on_snapshot)
    except (MemoryError, RuntimeError, KvoffError) as e:
        # Sizes were checked against the machine; what is free right now may still be less.
        raise UsageError(f"cannot allocate the KV tensors or the CPU tier: {e}") from None
    try:
        server = _start_server(args, registry)
        try:
            summary = _run(args, plan, engine, total, rank_totals, server)
            print(render(summary))
            failed_write = None if args.json is None else _write_json(args.json, summary.to_json())
            sys.stdout.flush()
            if server is not None and args.linger:
                time.sleep(args.linger)
        finally:
            if server is not None:
                server.shutdown()
    finally:
        engine.close()
    errors = [] if failed_write is None else [failed_write]
    errors += [
        f"{f.reason} at step {f.step}: its {f.transfers_failed} transfers in flight failed and "
        "the CPU tier served nothing after it"
        for f in summary.rank_failures
    ]
    if rank_totals and not _ranks_add_up(total, rank_totals):
        errors.append("the ranks' transfer totals do not add up to the engine's")
    for error in errors:
        print(f"kvoff bench: error: {error}", file=sys.stderr)
    return 1 if errors or summary.verify_failures else 0


def _ranks_add_up(
    total: OffloadingConnectorStats, rank_totals: dict[int, OffloadingConnectorStats]
) -> bool:
    """Whether the ranks' snapshots aggregate exactly into the engine's transfer totals (the
    scheduler's own accumulator records no transfers)."""
    from kvoff._core import OffloadingConnectorStats

    summed = OffloadingConnectorStats()
    for snap in rank_totals.values():
        summed.aggregate(snap)
    return bool(summed.to_dict()["transfers"] == total.to_dict()["transfers"])


def _run(
    args: argparse.Namespace,
    plan: _Plan,
    engine: SimulatedEngine,
    total: OffloadingConnectorStats,
    rank_totals: dict[int, OffloadingConnectorStats],
    server: MetricsServer | None,
) -> Summary:
    import torch

    from kvoff.bench.report import summarize
    from kvoff.bench.workload import WorkloadConfig, generate

    device = plan.device
    gpu_desc = torch.cuda.get_device_name() if device == "cuda" else "CPU tensors (no CUDA)"
    print(
        f"kvoff bench: preset {plan.shape.name}, device {device} ({gpu_desc}), "
        f"{plan.num_cpu_blocks} CPU blocks of {plan.cpu_block_bytes / 2**20:.2f} MiB, "
        f"{args.gpu_blocks} GPU blocks" + (f", {plan.tp} ranks" if plan.tp > 1 else ""),
        file=sys.stderr,
    )
    if server is not None:
        print(f"metrics: {server.url}", file=sys.stderr)
    if plan.remote_shown is not None:
        print(f"remote tier: {plan.remote_shown}", file=sys.stderr)
    workload = generate(
        WorkloadConfig(concurrency=args.conversations), plan.num_requests, seed=args.seed
    )
    show = not args.no_progress and sys.stderr.isatty()
    start = time.monotonic()
    if args.duration is not None:
        bar = _Progress(args.duration, "s", sys.stderr, show)
        deadline: float | None = time.perf_counter() + args.duration
    else:
        bar = _Progress(float(plan.num_requests or 0), "requests", sys.stderr, show)
        deadline = None

    def progress() -> None:
        t = engine.totals
        done = time.monotonic() - start if args.duration is not None else t.requests_finished
        bar.update(done, f"{t.tokens_from_cpu:,} tokens from CPU")

    link = None
    if device == "cuda" and plan.tp == 1:
        from kvoff.bench.link import single_copy_gb_per_s

        link = single_copy_gb_per_s(torch.device(device))
    totals = engine.run(workload, deadline, progress)
    bar.close()
    remote = None
    if plan.remote_shown is not None and totals.remote is not None:
        from kvoff.bench.remote import summarize_remote

        path = engine.scheduler.remote
        assert path is not None
        remote = summarize_remote(
            plan.remote_shown,
            engine.scheduler.tier_hits(),
            path,
            totals.remote,
            totals.remote_unsettled_at_exit,
        )
    return summarize(
        total.to_dict(),
        totals,
        device=f"{device} ({gpu_desc})",
        preset=plan.shape.name,
        cpu_capacity_blocks=plan.num_cpu_blocks,
        cpu_block_bytes=plan.cpu_block_bytes,
        link=link,
        rank_stats={r: s.to_dict() for r, s in rank_totals.items()} or {0: total.to_dict()},
        rank_infos=engine.rank_infos,
        rank_results=engine.rank_results,
        remote=remote,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "bench":
            return _bench(args)
    except UsageError as e:
        print(f"kvoff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kvoff {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
