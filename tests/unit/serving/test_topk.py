"""Unit tests of :mod:`serving.topk`."""

from __future__ import annotations

import numpy as np
import pytest

from serving.topk import block_size, top_k_rows


@pytest.mark.parametrize(("rows", "n", "k"), [(7, 5000, 20), (6, 12101, 40), (5, 100, 10), (4, 300, 300),
                                              (6, 12101, 100), (6, 12101, 200), (5, 4099, 3)])
def test_top_k_rows_matches_a_full_sort(rows: int, n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    s = rng.standard_normal((rows, n)).astype(np.float32)
    s[0, rng.integers(0, n, n // 3)] = -np.inf  # masked items
    s[1, :] = np.round(s[1, :], 1)  # many ties
    s[2, :] = np.where(s[2, :] > 0, np.float32(0.0), np.float32(-0.0))  # all tied, signed zeros
    s[3, k // 2:] = -np.inf  # fewer finite scores than k
    idx, val = top_k_rows(s, k)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :k]
    assert np.array_equal(val, np.take_along_axis(s, ref, axis=1))
    assert np.array_equal(np.take_along_axis(s, idx, axis=1), val)
    assert all(len(set(r)) == k for r in idx.tolist())
    if block_size(n, k):  # the blocked path also promises ties in column order
        assert np.array_equal(idx, ref)


def test_a_strided_view_gives_what_its_copy_gives() -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal((8, 2 * 12101)).astype(np.float32)[:, ::2]  # not C-contiguous
    a, b = top_k_rows(s, 100), top_k_rows(np.ascontiguousarray(s), 100)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_block_size_leaves_twice_k_blocks() -> None:
    assert block_size(12101, 20) == 64 and block_size(12101, 100) == 32
    assert block_size(12101, 200) == 16 and block_size(100, 20) == 0 and block_size(100, 10) == 4
    for n, k in [(12101, 200), (5000, 20), (1000, 30)]:
        size = block_size(n, k)
        assert n // size >= 2 * k and (size == 64 or n // (2 * size) < 2 * k)


def test_all_masked_row_still_returns_k() -> None:
    s = np.full((2, 4096), -np.inf, dtype=np.float32)
    s[1, 5] = 1.0
    idx, val = top_k_rows(s, 3)
    assert idx.shape == (2, 3) and idx[1, 0] == 5 and np.isneginf(val[0]).all()

