"""A tier the machine cannot hold raises MemoryError, naming the bytes needed and available.

Each case runs in a child interpreter: if the manager ever aborted on a failed allocation
again, that would end the child (exit status 134), not the test run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from kvoff._sysmem import physical_memory_bytes

CHILD = textwrap.dedent(
    """
    import sys

    from kvoff import OffloadingManager, StatsAccumulator

    num_blocks, policy = int(sys.argv[1]), sys.argv[2]
    acc = StatsAccumulator()
    try:
        OffloadingManager(num_blocks, policy=policy, stats=acc)
    except MemoryError as e:
        message = str(e)
    else:
        sys.exit("no MemoryError")
    print(message)
    # Nothing of the refused manager reached the accumulator it was given.
    assert acc.take().to_dict()["manager"]["capacity_blocks"] == 0
    # The interpreter and the extension are fine afterwards.
    m = OffloadingManager(4, policy=policy, stats=acc)
    assert m.prepare_store([b"a"]) is not None
    m.complete_store([b"a"])
    assert m.lookup([b"a"]) == 1
    assert acc.take().to_dict()["manager"]["capacity_blocks"] == 4
    """
)

PATTERN = (
    r"OffloadingManager\(num_blocks=(\d+), policy='(\w+)'\) needs \d+\.\d\d GiB \((\d+) bytes\) "
    r"for its index and per-block state, more than this machine's \d+\.\d\d GiB \((\d+) bytes\) "
    r"of physical memory"
)

physical = physical_memory_bytes()


@pytest.mark.skipif(physical is None, reason="the OS does not say how much memory it has")
@pytest.mark.parametrize(("num_blocks", "policy"), [(2**32 - 2, "lru"), (2**31, "arc")])
def test_a_tier_too_large_for_the_machine_raises_memory_error(num_blocks: int, policy: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(num_blocks), policy],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"exit status {run.returncode}: {run.stdout}{run.stderr}"
    match = re.fullmatch(PATTERN, run.stdout.strip())
    assert match is not None, run.stdout
    assert match[1] == str(num_blocks) and match[2] == policy
    needed, available = int(match[3]), int(match[4])
    assert available == physical
    # The index alone takes more than 64 bytes a block (one cache line each).
    assert needed > 64 * num_blocks > available
