"""A real ``redis-server`` for tests: started on a free loopback port in a temporary directory,
killed, restarted, paused (SIGSTOP) and stopped by the test that owns it.

Debian's ``redis-server`` package provides the binary (``apt-get install redis-server``);
without it the tests that need it skip, saying so, unless ``KVOFF_REQUIRE_REDIS=1`` makes
that a failure (for CI, where a missing install step must not pass as skips).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REDIS_CLI = shutil.which("redis-cli")


def require_tool(name: str, reason: str) -> str:
    """The tool's path; without it the test skips, saying why, unless ``KVOFF_REQUIRE_REDIS=1``
    (CI, which installs redis-server, redis-tools and openssl) makes its absence a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("KVOFF_REQUIRE_REDIS") == "1":
            pytest.fail(reason + "; KVOFF_REQUIRE_REDIS=1 makes this a failure")
        pytest.skip(reason)
    return path


def require_redis_server() -> str:
    return require_tool(
        "redis-server", "redis-server is not installed (Debian: apt-get install redis-server)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port ``p`` whose cluster bus port ``p + 10000`` is free too (Redis needs
    ``p <= 55535``)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; a deadline, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _ping(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if password is not None:
                s.sendall(f"AUTH {password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``config`` adds directives (``maxmemory``, ...)."""

    def __init__(
        self, workdir: Path, config: dict[str, str] | None = None, *, port: int | None = None
    ) -> None:
        self.binary = require_redis_server()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port() if port is None else port
        self.config = dict(config or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _conf(self) -> Path:
        lines = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.workdir),
            "save": '""',
            "appendonly": "no",
            "protected-mode": "no",
            "daemonize": "no",
            "logfile": str(self.workdir / "redis.log"),
            **self.config,
        }
        path = self.workdir / "redis.conf"
        path.write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
        return path

    def start(self) -> RedisServer:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [self.binary, str(self._conf())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not self._ready():
            if self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"redis-server exited at start:\n{log}")
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer PING within 15 s")
            time.sleep(0.02)
        return self

    def _ready(self) -> bool:
        if "port" in self.config and self.config["port"] == "0":
            return True  # TLS only: the test checks readiness itself
        return _ping(self.port, self.config.get("requirepass"))

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no goodbye to clients."""
        if self.proc is not None:
            self.resume()
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a slow server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        assert REDIS_CLI is not None, "redis-cli is missing (Debian: apt-get install redis-tools)"
        cmd = [REDIS_CLI, "-p", str(self.port)]
        if "requirepass" in self.config:
            cmd += ["--no-auth-warning", "-a", self.config["requirepass"]]
        out = subprocess.run([*cmd, *args], capture_output=True, timeout=10, check=True)
        return out.stdout.decode().strip()

    def stop(self) -> None:
        self.kill()
