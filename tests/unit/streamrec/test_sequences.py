"""Unit tests of :mod:`streamrec.sequences`."""

from __future__ import annotations

import numpy as np

from streamrec.sequences import left_pad


def test_left_pad_keeps_last_items_right_aligned() -> None:
    out = left_pad([[1, 2, 3, 4], [5], []], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
    assert out.dtype == np.int64

