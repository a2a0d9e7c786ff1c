"""A three-node Redis Cluster on localhost (keys spread over every node) and TLS (rediss://)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from _redis_proc import (
    REDIS_CLI,
    RedisServer,
    free_cluster_port,
    free_port,
    require_tool,
    wait_until,
)
from _remote_data import BLOCK_BYTES, bhash, block

from kvoff.remote import LookupResult, RemoteLayout, RemoteTier

TierFactory = Callable[..., RemoteTier]
ServerFactory = Callable[..., RedisServer]


def _round_trip(tier: RemoteTier, n: int) -> None:
    assert tier.writer is not None and tier.lookup is not None and tier.fetcher is not None
    tier.stats.take()  # count only this round trip's errors
    for i in range(n):
        tier.writer.enqueue(bhash(i), block(i))
    assert tier.writer.flush(30)
    assert tier.lookup.wait(tier.lookup.submit([bhash(i) for i in range(n + 1)]), 30) == (
        LookupResult(n, True)
    )
    dests = [torch.zeros(BLOCK_BYTES, dtype=torch.uint8) for _ in range(n)]
    job = tier.fetcher.submit([(bhash(i), dests[i]) for i in range(n)])
    (result,) = tier.fetcher.wait([job], 30)
    assert result.ok == (True,) * n
    for i in range(n):
        assert torch.equal(dests[i], block(i))
    assert set(tier.stats.take()["errors"].values()) == {0}


def _cluster(server_factory: ServerFactory) -> list[RedisServer]:
    require_tool("redis-cli", "redis-cli is not installed (Debian: apt-get install redis-tools)")
    nodes = [
        server_factory(
            {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": "2000",
            },
            port=free_cluster_port(),
        )
        for _ in range(3)
    ]
    subprocess.run(
        [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
         "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    for n in nodes:
        wait_until(lambda n=n: "cluster_state:ok" in n.cli("CLUSTER", "INFO"), 30, "cluster ok")
    return nodes


def test_cluster_spreads_blocks_over_every_node(
    server_factory: ServerFactory, layout: RemoteLayout, tier_factory: TierFactory
) -> None:
    nodes = _cluster(server_factory)
    tier = tier_factory(f"redis+cluster://127.0.0.1:{nodes[0].port}", layout)
    _round_trip(tier, 24)
    per_node = [int(n.cli("DBSIZE")) for n in nodes]
    assert sum(per_node) == 24
    assert all(c > 0 for c in per_node), per_node
    # One node dies: the tier answers misses, serves nothing wrong, and comes back with it.
    nodes[2].kill()
    assert tier.lookup is not None and tier.fetcher is not None
    wait_until(
        lambda: (
            tier.lookup is not None
            and tier.lookup.wait(tier.lookup.submit([bhash(i) for i in range(24)]), 30)
            == LookupResult(0, False)
        ),
        30,
        "the tier to notice the dead node",
    )
    assert tier.stats.totals()["errors"]["connection"] >= 1
    dests = [torch.zeros(BLOCK_BYTES, dtype=torch.uint8) for _ in range(24)]
    (result,) = tier.fetcher.wait(
        [tier.fetcher.submit([(bhash(i), dests[i]) for i in range(24)])], 30
    )
    for i, ok in enumerate(result.ok):
        assert torch.equal(dests[i], block(i) if ok else torch.zeros_like(dests[i]))
    nodes[2].start()  # rejoins with its slots (nodes.conf), empty
    for n in nodes:
        wait_until(lambda n=n: "cluster_state:ok" in n.cli("CLUSTER", "INFO"), 30, "cluster ok")
    wait_until(
        lambda: (
            tier.lookup is not None
            and (r := tier.lookup.wait(tier.lookup.submit([bhash(0)]), 30)) is not None
            and r.ok
        ),
        30,
        "the tier to answer again",
    )
    present = sum(
        1
        for i in range(24)
        if (r := tier.lookup.wait(tier.lookup.submit([bhash(i)]), 30)) is not None and r.hits
    )
    assert present == 24 - per_node[2]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return cert, key


def test_tls(
    server_factory: ServerFactory, layout: RemoteLayout, tier_factory: TierFactory, tmp_path: Path
) -> None:
    require_tool("openssl", "openssl is not installed: no certificate for the TLS server")
    cert, key = _self_signed(tmp_path)
    tls_port = free_port()
    server = server_factory(
        {
            "port": "0",
            "tls-port": str(tls_port),
            "tls-cert-file": str(cert),
            "tls-key-file": str(key),
            "tls-ca-cert-file": str(cert),
            "tls-auth-clients": "no",
        }
    )
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
    tier = tier_factory(url, layout)
    wait_until(
        lambda: (
            tier.lookup is not None
            and (r := tier.lookup.wait(tier.lookup.submit([bhash(0)]), 30)) is not None
            and r.ok
        ),
        30,
        "the TLS server to answer",
    )
    _round_trip(tier, 4)
    # A client that does not trust the certificate gets nothing.
    untrusting = tier_factory(f"rediss://127.0.0.1:{tls_port}/0", layout, write=False)
    assert untrusting.lookup is not None
    assert untrusting.lookup.wait(untrusting.lookup.submit([bhash(0)]), 30) == LookupResult(
        0, False
    )
    assert untrusting.stats.totals()["errors"]["connection"] >= 1
    assert server.proc is not None and server.proc.poll() is None
