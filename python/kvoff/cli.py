"""``kvoff`` command line: ``kvoff bench`` replays a multi-turn serving workload."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import torch

from kvoff.bench.presets import PRESETS


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def _positive(kind: type[int] | type[float], what: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be positive, got {text}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage dump: the message already names the bad argument.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvoff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "bench",
        help="replay a multi-turn serving workload through the scheduler, worker and metrics",
        description="Replay conversations that share system prompts and grow turn by turn "
        "through kvoff's scheduler and worker halves on real tensors (CUDA when present), "
        "then print a summary.",
    )
    b.add_argument("--preset", default="small", help=f"model shape: {', '.join(PRESETS)}")
    b.add_argument(
        "--cpu-gb",
        type=_positive(float, "--cpu-gb"),
        default=1.0,
        help="CPU tier size in GiB (default 1: small enough that the default run evicts)",
    )
    b.add_argument(
        "--gpu-blocks",
        type=_positive(int, "--gpu-blocks"),
        default=2048,
        help="GPU KV blocks the simulated engine owns (default 2048)",
    )
    b.add_argument(
        "--gpu-block-size",
        type=_positive(int, "--gpu-block-size"),
        default=16,
        help="tokens per GPU block (default 16)",
    )
    b.add_argument(
        "--cpu-block-size",
        type=_positive(int, "--cpu-block-size"),
        default=64,
        help="tokens per CPU block, a multiple of the GPU block size (default 64)",
    )
    b.add_argument("--policy", choices=("lru", "arc"), default="lru")
    run = b.add_mutually_exclusive_group()
    run.add_argument(
        "--requests",
        type=_positive(int, "--requests"),
        default=None,
        help="requests to replay (default 400 unless --duration is given)",
    )
    run.add_argument(
        "--duration",
        type=_positive(float, "--duration"),
        default=None,
        help="admit requests for this many seconds, then drain",
    )
    b.add_argument(
        "--conversations",
        type=_positive(int, "--conversations"),
        default=32,
        help="conversations active at once (default 32)",
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    b.add_argument("--json", metavar="PATH", help="also write the summary as JSON ('-': stdout)")
    b.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port while running",
    )
    b.add_argument("--metrics-addr", default="127.0.0.1")
    b.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="keep serving /metrics this many seconds after the run",
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


def _bench(args: argparse.Namespace) -> int:
    # Imported here so `kvoff --help` stays fast.
    from prometheus_client import CollectorRegistry

    from kvoff._core import OffloadingConnectorStats
    from kvoff.bench.engine import EngineConfig, SimulatedEngine
    from kvoff.bench.report import render, summarize
    from kvoff.bench.workload import WorkloadConfig, generate
    from kvoff.metrics import OffloadPromMetrics, start_metrics_server

    shape = PRESETS.get(args.preset)
    if shape is None:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.cpu_block_size % args.gpu_block_size:
        raise UsageError(
            f"--cpu-block-size {args.cpu_block_size} is not a multiple of "
            f"--gpu-block-size {args.gpu_block_size}"
        )
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UsageError(f"--metrics-port must be in 1..65535, got {args.metrics_port}")
    if args.linger < 0:
        raise UsageError(f"--linger must not be negative, got {args.linger}")
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    else:
        device = args.device
    cpu_block_bytes = args.cpu_block_size * shape.bytes_per_token()
    num_cpu_blocks = int(args.cpu_gb * 2**30) // cpu_block_bytes
    if num_cpu_blocks < 1:
        raise UsageError(
            f"--cpu-gb {args.cpu_gb} is smaller than one CPU block "
            f"({cpu_block_bytes} bytes for preset {shape.name})"
        )
    num_requests = args.requests if args.requests or args.duration else 400

    registry = CollectorRegistry()
    exporter = OffloadPromMetrics(
        registry=registry, labels={"model_name": shape.name}, vllm_compatible=True
    )
    server = None
    if args.metrics_port is not None:
        try:
            server = start_metrics_server(args.metrics_port, args.metrics_addr, registry=registry)
        except OSError as e:  # kvoff's port-in-use error is an OSError too
            raise UsageError(str(e)) from None

    total = OffloadingConnectorStats()

    def on_snapshot(snap: object) -> None:
        exporter.observe(snap, engine="0")
        total.aggregate(snap)  # type: ignore[arg-type]

    gpu_desc = torch.cuda.get_device_name() if device == "cuda" else "CPU tensors (no CUDA)"
    print(
        f"kvoff bench: preset {shape.name}, device {device} ({gpu_desc}), "
        f"{num_cpu_blocks} CPU blocks of {cpu_block_bytes / 2**20:.2f} MiB, "
        f"{args.gpu_blocks} GPU blocks",
        file=sys.stderr,
    )
    if server is not None:
        print(f"metrics: http://{args.metrics_addr}:{args.metrics_port}/metrics", file=sys.stderr)
    cfg = EngineConfig(
        shape=shape,
        gpu_blocks=args.gpu_blocks,
        num_cpu_blocks=num_cpu_blocks,
        gpu_block_size=args.gpu_block_size,
        cpu_block_size=args.cpu_block_size,
        policy=args.policy,
        device=device,
        seed=args.seed,
    )
    try:
        engine = SimulatedEngine(cfg, on_snapshot=on_snapshot)
    except (MemoryError, RuntimeError) as e:
        raise UsageError(f"cannot allocate the KV tensors or the CPU tier: {e}") from None
    workload = generate(
        WorkloadConfig(concurrency=args.conversations), num_requests, seed=args.seed
    )
    show = not args.no_progress and sys.stderr.isatty()
    start = time.monotonic()
    if args.duration is not None:
        bar = _Progress(args.duration, "s", sys.stderr, show)
        deadline: float | None = time.perf_counter() + args.duration
    else:
        bar = _Progress(float(num_requests or 0), "requests", sys.stderr, show)
        deadline = None

    def progress() -> None:
        t = engine.totals
        done = time.monotonic() - start if args.duration is not None else t.requests_finished
        bar.update(done, f"{t.tokens_from_cpu:,} tokens from CPU")

    link = None
    if device == "cuda":
        from kvoff.bench.link import single_copy_gb_per_s

        link = single_copy_gb_per_s(torch.device(device))
    totals = engine.run(workload, deadline, progress)
    bar.close()
    summary = summarize(
        total.to_dict(),
        totals,
        device=f"{device} ({gpu_desc})",
        preset=shape.name,
        cpu_capacity_blocks=num_cpu_blocks,
        cpu_block_bytes=cpu_block_bytes,
        link=link,
    )
    print(render(summary))
    if args.json == "-":
        print(summary.to_json())
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(summary.to_json() + "\n")
    sys.stdout.flush()
    if server is not None:
        if args.linger:
            time.sleep(args.linger)
        server.shutdown()
    return 1 if summary.verify_failures else 0


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
