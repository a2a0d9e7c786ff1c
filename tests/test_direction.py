"""Direction names are defined once, in the core, and every Python module reads them from
``kvoff._core.Direction``."""

from __future__ import annotations

import typing

import pytest

import kvoff.metrics.exporter
import kvoff.metrics.log_line
import kvoff.metrics.vllm_compat
from kvoff import Direction, OffloadingConnectorStats
from kvoff.transfer import result


def test_constants_are_the_core_names() -> None:
    assert Direction.GPU_TO_CPU == "GPU_to_CPU"
    assert Direction.CPU_TO_GPU == "CPU_to_GPU"
    assert Direction.CPU_TO_REMOTE == "CPU_to_REMOTE"
    assert Direction.REMOTE_TO_CPU == "REMOTE_to_CPU"
    assert Direction.GPU == ("GPU_to_CPU", "CPU_to_GPU")
    assert Direction.REMOTE == ("CPU_to_REMOTE", "REMOTE_to_CPU")
    assert Direction.ALL == Direction.GPU + Direction.REMOTE
    # The snapshot lists its directions in the same order.
    assert tuple(OffloadingConnectorStats().to_dict()["transfers"]) == Direction.ALL


def test_direction_is_a_namespace_not_a_value() -> None:
    with pytest.raises(TypeError, match=r"cannot create 'kvoff\._core\.Direction' instances"):
        Direction()


def test_python_modules_reuse_the_core_names() -> None:
    assert (result.GPU_TO_CPU, result.CPU_TO_GPU) == (Direction.GPU_TO_CPU, Direction.CPU_TO_GPU)
    assert result.DIRECTIONS == Direction.GPU
    # The one typing spelling agrees with the core's values.
    assert typing.get_args(result.DirectionName) == result.DIRECTIONS
    assert kvoff.metrics.exporter.DIRECTIONS == result.DIRECTIONS
    assert kvoff.metrics.log_line._DIRECTIONS == result.DIRECTIONS
    assert kvoff.metrics.vllm_compat._DIRECTIONS == result.DIRECTIONS
