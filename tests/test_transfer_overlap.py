"""The row-overlap test that refuses layers sharing bytes, against a byte-set model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvoff.transfer.overlap import _overlap, _Rows


@st.composite
def rows(draw: st.DrawFn, stride: int | None = None) -> _Rows:
    """Rows as a layout makes them: the stride at least the row length (``stride`` fixes it)."""
    length = draw(st.integers(1, 12 if stride is None else stride))
    s = stride if stride is not None else draw(st.integers(length, 24))
    return _Rows(draw(st.integers(0, 80)), s, length, draw(st.integers(1, 6)))


def _bytes(r: _Rows) -> set[int]:
    return {r.start + i * r.stride + b for i in range(r.count) for b in range(r.length)}


@settings(max_examples=1000, deadline=None)
@given(a=rows(), b=rows())
def test_overlap_matches_the_bytes(a: _Rows, b: _Rows) -> None:
    assert _overlap(a, b) == bool(_bytes(a) & _bytes(b))


@settings(max_examples=1000, deadline=None)
@given(stride=st.integers(1, 24), data=st.data())
def test_equal_stride_overlap_matches_the_bytes(stride: int, data: st.DataObject) -> None:
    a = data.draw(rows(stride))
    b = data.draw(rows(stride))
    assert _overlap(a, b) == bool(_bytes(a) & _bytes(b))
