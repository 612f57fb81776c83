"""Unit tests of :mod:`streamrec.sequences`."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from streamrec.sequences import left_pad


def test_left_pad_keeps_last_items_right_aligned() -> None:
    out = left_pad([[1, 2, 3, 4], [5], []], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
    assert out.dtype == np.int64



def test_window_start_moves_once_per_stride_and_keeps_the_window_long() -> None:
    from streamrec.sequences import window_start

    for max_len in (1, 2, 5, 20, 50):
        stride = max(1, max_len // 2)
        starts = [window_start(n, max_len) for n in range(1, 400)]
        for n, a in enumerate(starts, start=1):
            assert a % stride == 0
            assert max_len - stride + 1 <= n - a <= max_len or (a == 0 and n <= max_len)
        # between moves every new item extends the window by one
        moves = [n for n in range(2, 400) if starts[n - 1] != starts[n - 2]]
        assert all(b - a == stride for a, b in pairwise(moves))


def test_window_cut_anchored_and_from_the_end() -> None:
    from streamrec.sequences import Window

    seq = list(range(1, 13))  # 12 items
    assert list(Window(8).cut(seq)) == seq[-8:]
    assert list(Window(8, anchored=True).cut(seq)) == seq[4:]  # start 4 = stride 4 x 1
    assert list(Window(8, anchored=True).cut(seq[:8])) == seq[:8]
    assert list(Window(8, anchored=True).cut(seq[:9])) == seq[4:9]
    assert Window(8, anchored=True).pad([seq[:9], [3]]).tolist() == [[5, 6, 7, 8, 9], [0, 0, 0, 0, 3]]
