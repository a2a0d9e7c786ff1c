"""A CPU tier allocated in the background: usable chunk by chunk, a transfer or view naming a
block not allocated yet is refused and changes nothing, a failed allocation stops the tier where
it is; and the NUMA placement read from sysfs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from _transfer_kv import all_blocks, make_kv
from kvoff.errors import InvalidArgumentError, InvalidStateError
from kvoff.transfer import CpuGpuTransfer, cpu_tier
from kvoff.transfer.numa import allocation_cpus, gpu_numa_node, parse_cpulist

BS = 16


class _Gate:
    """Replaces the chunk allocator: each chunk waits for one ``release()``, records the CPUs
    its thread may run on, and the ``fail_at``-th chunk raises MemoryError."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> None:
        self.sem = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)  # one release per chunk the thread started
        self.allocated = 0
        self.cpus: list[set[int]] = []
        self.fail_at = fail_at
        real = cpu_tier.allocate_chunk

        def gated(nbytes: int, pin: bool, method: str = "alloc") -> torch.Tensor:
            self.entered.release()
            assert self.sem.acquire(timeout=30), "the test never released this chunk"
            self.cpus.append(os.sched_getaffinity(0))
            if self.allocated == self.fail_at:
                raise MemoryError(f"no room for chunk {self.allocated}")
            self.allocated += 1
            return real(nbytes, pin, method)

        monkeypatch.setattr(cpu_tier, "allocate_chunk", gated)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.sem.release()


def _growing(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> tuple:
    kv, _ = make_kv("blocks_first", device="cpu", num_blocks=12)
    probe = CpuGpuTransfer(kv, BS, BS, 1)
    gate = _Gate(monkeypatch, fail_at)
    # 10 CPU blocks, 2 per chunk: 5 chunks.
    t = CpuGpuTransfer(
        kv, BS, BS, 10, pin_chunk_bytes=2 * probe.cpu_block_bytes, alloc_in_background=True
    )
    return kv, t, gate


def test_blocks_become_usable_chunk_by_chunk_and_unready_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kv, t, gate = _growing(monkeypatch)
    original = all_blocks(kv, "blocks_first", 12)
    assert t.ready_cpu_blocks == 0 and t.cpu_alloc_seconds is None
    assert t.cpu_first_ready_seconds is None
    msg = (
        r"CPU block 0 is not allocated yet: blocks \[0, 0\) of 10 are ready "
        r"\(it is still being allocated\); see ready_cpu_blocks"
    )
    with pytest.raises(InvalidStateError, match=msg):
        t.transfer_async(1, "GPU_to_CPU", [3], [0])
    with pytest.raises(InvalidStateError, match=msg):
        t.cpu_block(0)
    assert list(t.in_flight()) == []
    assert t.wait_cpu_blocks(2, timeout=0.01) == 0  # nothing released: times out at 0

    gate.release()
    assert t.wait_cpu_blocks(2) == 2 == t.ready_cpu_blocks
    assert t.cpu_first_ready_seconds is not None and t.cpu_alloc_seconds is None
    # A job that names one ready and one unready block is refused whole: block 1 untouched.
    with pytest.raises(InvalidStateError, match=r"CPU block 2 is not allocated yet: blocks "):
        t.transfer_async(1, "GPU_to_CPU", [5, 6], [1, 2])
    assert torch.equal(t.cpu_block(1), torch.zeros_like(t.cpu_block(1)))
    with pytest.raises(InvalidStateError, match="CPU block 3 is not allocated yet"):
        t.transfer_async(1, "CPU_to_GPU", [5, 6], [3, 0])
    after = all_blocks(kv, "blocks_first", 12)
    assert all(torch.equal(a, b) for a, b in zip(after, original, strict=True))
    # The same job id is still free, and ready blocks work.
    t.transfer_async(1, "GPU_to_CPU", [5, 6], [0, 1])
    assert t.wait([1])[0].success
    assert torch.equal(t.cpu_block(1), original[6])

    gate.release(4)
    assert t.wait_cpu_blocks() == 10
    assert t.cpu_alloc_seconds is not None and t.cpu_alloc_error is None
    # Every chunk that arrived later holds zeros: nothing was written into it before.
    for j in range(2, 10):
        assert torch.equal(t.cpu_block(j), torch.zeros_like(t.cpu_block(j)))
    t.transfer_async(2, "GPU_to_CPU", [11, 10], [8, 9])
    t.transfer_async(3, "CPU_to_GPU", [0], [1])
    assert [r.success for r in t.wait([2, 3])] == [True, True]
    assert torch.equal(t.cpu_block(9), original[10])
    assert torch.equal(all_blocks(kv, "blocks_first", 12)[0], original[6])


def test_a_failed_background_allocation_keeps_what_is_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, t, gate = _growing(monkeypatch, fail_at=2)
    gate.release(3)
    assert t.wait_cpu_blocks() == 4  # two chunks, then the third raised
    assert isinstance(t.cpu_alloc_error, MemoryError) and t.cpu_alloc_seconds is None
    with pytest.raises(
        InvalidStateError,
        match=r"CPU block 4 is not allocated yet: blocks \[0, 4\) of 10 are ready \(allocating "
        r"it stopped: MemoryError\('no room for chunk 2'\)\)",
    ):
        t.transfer_async(1, "GPU_to_CPU", [0], [4])
    t.transfer_async(1, "GPU_to_CPU", [0], [3])
    assert t.wait([1])[0].success


def test_a_failed_allocation_raises_from_the_constructor_when_not_in_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kv, _ = make_kv("blocks_first", device="cpu", num_blocks=4)
    gate = _Gate(monkeypatch, fail_at=1)
    gate.release(2)
    with pytest.raises(MemoryError, match="no room for chunk 1"):
        CpuGpuTransfer(kv, BS, BS, 4, pin_chunk_bytes=1)


def test_wait_cpu_blocks_checks_its_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    _, t, gate = _growing(monkeypatch)
    with pytest.raises(InvalidArgumentError, match="num_blocks must be a positive integer"):
        t.wait_cpu_blocks(0)
    gate.release(5)
    assert t.wait_cpu_blocks(100) == 10  # more than the tier: waits for all of it


def test_closing_stops_the_allocation_after_the_chunk_in_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, t, gate = _growing(monkeypatch)
    gate.release()
    for _ in range(2):  # the first chunk, then the second one started
        assert gate.entered.acquire(timeout=30)
    tier = t._tier
    tier.close()
    gate.release(4)
    tier._thread.join(timeout=30)
    assert not tier._thread.is_alive()
    assert tier.ready_blocks == 4 and gate.allocated == 2 and tier.done


def test_the_allocating_thread_runs_on_the_given_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = _Gate(monkeypatch)
    gate.release(2)
    mine = os.sched_getaffinity(0)
    one = {min(mine)}
    tier = cpu_tier.CpuTier(4, 64, pin=False, chunk_bytes=128, cpus=one)
    assert tier.ready_blocks == 4 and gate.cpus == [one, one]
    assert os.sched_getaffinity(0) == mine  # the caller's thread is not moved


def _fake_sysfs(root: Path, nodes: dict[int, str], gpu_node: str) -> str:
    for n, cpus in nodes.items():
        d = root / "devices" / "system" / "node" / f"node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
    bus = "0000:17:00.0"
    dev = root / "bus" / "pci" / "devices" / bus
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text(gpu_node + "\n")
    return bus


def test_cpulists_parse() -> None:
    assert parse_cpulist("0-3,8-9,12\n") == {0, 1, 2, 3, 8, 9, 12}
    assert parse_cpulist("") == set()


def test_the_gpus_node_and_its_allowed_cpus_come_from_sysfs(tmp_path: Path) -> None:
    mine = sorted(os.sched_getaffinity(0))
    other = max(mine) + 100  # a CPU this process may not use
    bus = _fake_sysfs(tmp_path, {0: f"{other}", 1: f"{mine[0]},{other + 1}"}, "1")
    assert gpu_numa_node(bus, tmp_path) == 1
    assert allocation_cpus(bus, tmp_path) == (1, {mine[0]})
    assert gpu_numa_node("0000:99:00.0", tmp_path) is None  # no such device


@pytest.mark.parametrize(
    ("nodes", "gpu_node"),
    [({0: "0-1"}, "0"), ({0: "0", 1: "1"}, "-1"), ({0: "0", 1: "100000"}, "1")],
    ids=["one node", "no affinity reported", "none of the node's cpus allowed"],
)
def test_no_placement_where_it_cannot_help(
    tmp_path: Path, nodes: dict[int, str], gpu_node: str
) -> None:
    bus = _fake_sysfs(tmp_path, nodes, gpu_node)
    assert allocation_cpus(bus, tmp_path) == (None, None)


_EXIT_WHILE_ALLOCATING = """
import torch
from kvoff.transfer import CpuGpuTransfer
kv = [torch.zeros(2, 64, 16, 64, dtype=torch.bfloat16) for _ in range(2)]
t = CpuGpuTransfer(kv, 16, 64, 4096, layout="kv_split", alloc_in_background=True)
print(t.ready_cpu_blocks < 4096)
"""


def test_exiting_while_the_tier_is_allocated_ends_cleanly() -> None:
    # A process that exits with its tier half allocated (a short bench, an engine that
    # fails early): the thread was killed inside torch as the interpreter finalized, and the
    # process aborted (status 134, "terminate called without an active exception").
    import subprocess
    import sys

    import kvoff

    # The kvoff under test, whatever the relative PYTHONPATH this run was started with.
    env = {**os.environ, "PYTHONPATH": str(Path(kvoff.__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-c", _EXIT_WHILE_ALLOCATING],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert (run.returncode, run.stdout, run.stderr) == (0, "True\n", "")
