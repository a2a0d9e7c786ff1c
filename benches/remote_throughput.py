"""Remote-tier write / read throughput against a local redis-server on loopback, as a ratio
against ``redis-benchmark`` and a plain redis-py loop with the same value size, in one run.

    python benches/remote_throughput.py --value-mib 4 --values 48 --reps 3

Starts its own ``redis-server`` (no persistence) on a free port in a temporary directory and
stops it at the end. Every measurement is repeated ``--reps`` times, the kinds interleaved so
that load from other processes hits them alike; the table shows medians. References:

- ``redis-benchmark``: Redis's own C client (SET / GET, ``-d`` value bytes, ``-c`` connections,
  ``-P`` pipeline depth);
- ``redis-py``: a plain loop of ``set`` / ``get`` on one connection, redis-py's pure-Python
  reply reader (no hiredis);
- ``socket``: one connection, RESP written and read by hand with ``recv_into`` into one
  buffer: what a Python client could reach at best, with no checks;
- ``kvoff``: ``WriteBehind`` (enqueue every block, wait for the queue to drain; each value is
  built with its header and checksum, and an EXISTS round trip precedes each batch) and
  ``RemoteFetcher`` (one job of every block into CPU tensors, each value verified before its
  copy), for each ``threads x batch`` setting.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import torch

from kvoff.remote import HEADER_BYTES, RemoteLayout, RemoteTier


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = _free_port()
        conf = workdir / "redis.conf"
        conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\ndir {workdir}\nsave ""\nappendonly no\n'
            f"protected-mode no\nlogfile {workdir / 'redis.log'}\n"
        )
        self.proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                if redis.Redis(port=self.port).ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.version = redis.Redis(port=self.port).info("server")["redis_version"]

    def flush(self) -> None:
        redis.Redis(port=self.port).flushall()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _redis_benchmark(port: int, size: int, n: int, conns: int, depth: int) -> dict[str, float]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    out = subprocess.run(
        [binary, "-p", str(port), "-t", "set,get", "-d", str(size), "-n", str(n),
         "-c", str(conns), "-P", str(depth), "--csv"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    rates = {}
    for row in csv.reader(io.StringIO(out)):
        if row and row[0] in ("SET", "GET"):
            rates[row[0]] = float(row[1]) * size
    return rates


def _redis_py_loop(port: int, value: bytes, n: int) -> dict[str, float]:
    r = redis.Redis(port=port)
    began = time.perf_counter()
    for i in range(n):
        r.set(f"plain:{i}", value)
    set_s = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(n):
        r.get(f"plain:{i}")
    get_s = time.perf_counter() - began
    r.close()
    return {"SET": n * len(value) / set_s, "GET": n * len(value) / get_s}


def _socket_loop(port: int, value: bytes, n: int) -> dict[str, float]:
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(len(value) + 64)
    view = memoryview(buf)

    def reply() -> None:
        got = s.recv_into(view)
        while b"\r\n" not in buf[: min(got, 32)]:
            got += s.recv_into(view[got:])
        end = buf.index(b"\r\n")
        total = end + 2 + (int(buf[1:end]) + 2 if buf[:1] == b"$" else 0)
        while got < total:
            got += s.recv_into(view[got:], total - got)

    began = time.perf_counter()
    for i in range(n):
        key = f"sock:{i}".encode()
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value)))
        s.sendall(value)
        s.sendall(b"\r\n")
        reply()
    set_s = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(n):
        key = f"sock:{i}".encode()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        reply()
    get_s = time.perf_counter() - began
    s.close()
    return {"SET": n * len(value) / set_s, "GET": n * len(value) / get_s}


def _kvoff(
    port: int, blocks: list[torch.Tensor], threads: int, batch: int, rep: int
) -> dict[str, float]:
    size = blocks[0].numel()
    layout = RemoteLayout(
        model=f"bench-{rep}-{threads}-{batch}", dtype="bfloat16", layout="cross_layer",
        block_bytes=size, cpu_block_size=16, gpu_block_size=16,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0?timeout=30"
    with RemoteTier(
        url, layout, lookup=False, write_threads=threads, write_batch_blocks=batch,
        fetch_threads=threads, fetch_batch_blocks=batch, max_queue_blocks=len(blocks),
        max_queue_bytes=len(blocks) * (size + HEADER_BYTES),
    ) as tier:  # fmt: skip
        assert tier.writer is not None and tier.fetcher is not None
        hashes = [i.to_bytes(8, "big") for i in range(len(blocks))]
        began = time.perf_counter()
        for h, b in zip(hashes, blocks, strict=True):
            tier.writer.enqueue(h, b, copy=False)
        if not tier.writer.flush(600):
            raise RuntimeError("write-behind did not drain")
        set_s = time.perf_counter() - began
        dests = [torch.empty(size, dtype=torch.uint8) for _ in blocks]
        began = time.perf_counter()
        job = tier.fetcher.submit(list(zip(hashes, dests, strict=True)))
        (result,) = tier.fetcher.wait([job], 600)
        get_s = time.perf_counter() - began
        totals = tier.stats.totals()
        if not result.success or totals["write_behind"]["written"] != len(blocks):
            raise RuntimeError(f"kvoff run lost blocks: {totals}")
        if not all(torch.equal(a, b) for a, b in zip(blocks[:2], dests[:2], strict=True)):
            raise RuntimeError("kvoff read back different bytes")
    n = len(blocks) * size
    return {"SET": n / set_s, "GET": n / get_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--value-mib", type=float, default=4.0)
    ap.add_argument("--values", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--threads", default="1,2,4", help="kvoff threads (= connections) per direction"
    )
    ap.add_argument("--batch", default="1,4", help="kvoff blocks per pipeline")
    ap.add_argument("--bench-conns", type=int, default=4, help="redis-benchmark -c")
    ap.add_argument("--bench-pipeline", type=int, default=1, help="redis-benchmark -P")
    ap.add_argument("--json", type=Path, help="also write the raw samples here")
    args = ap.parse_args(argv)
    size = int(args.value_mib * (1 << 20))
    n = args.values
    threads = [int(x) for x in args.threads.split(",")]
    batches = [int(x) for x in args.batch.split(",")]
    value = os.urandom(size)
    blocks = [torch.randint(0, 256, (size,), dtype=torch.uint8) for _ in range(n)]
    samples: dict[str, list[dict[str, float]]] = {}
    runs: list[tuple[str, Callable[[int], dict[str, float]]]] = [
        (
            f"redis-benchmark -c {args.bench_conns} -P {args.bench_pipeline}",
            lambda _: _redis_benchmark(port, size, n, args.bench_conns, args.bench_pipeline),
        ),
        ("redis-py loop, 1 connection", lambda _: _redis_py_loop(port, value, n)),
        ("socket loop, 1 connection", lambda _: _socket_loop(port, value, n)),
    ]
    for t in threads:
        for b in batches:
            runs.append(
                (
                    f"kvoff {t} thread(s) x batch {b}",
                    lambda rep, t=t, b=b: _kvoff(port, blocks, t, b, rep),
                )
            )
    with tempfile.TemporaryDirectory() as tmp:
        server = _Server(Path(tmp))
        port = server.port
        try:
            for rep in range(args.reps):
                for name, fn in runs:
                    server.flush()
                    samples.setdefault(name, []).append(fn(rep))
        finally:
            server.stop()
    med = {
        name: {
            op: statistics.median(s[op] for s in runs_ if op in s)
            for op in ("SET", "GET")
            if any(op in s for s in runs_)
        }
        for name, runs_ in samples.items()
    }
    base = med[runs[0][0]] or med[runs[1][0]]
    plain = med[runs[1][0]]
    print(
        f"redis-server {server.version}, value {size} B, {n} values, {args.reps} reps (medians), "
        f"{os.cpu_count()} CPUs"
    )
    print(
        "| run | SET GB/s | GET GB/s | SET vs redis-benchmark | GET vs redis-benchmark "
        "| SET vs redis-py | GET vs redis-py |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, m in med.items():
        cells = [f"{m.get(op, 0) / 1e9:.2f}" for op in ("SET", "GET")]
        cells += [
            f"{m[op] / base[op]:.2f}" if op in base and op in m else "-" for op in ("SET", "GET")
        ]
        cells += [f"{m[op] / plain[op]:.2f}" for op in ("SET", "GET")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "samples": samples}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
