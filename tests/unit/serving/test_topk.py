"""Unit tests of :mod:`serving.topk`."""

from __future__ import annotations

import numpy as np
import pytest

from serving.topk import top_k_rows


@pytest.mark.parametrize(("rows", "n", "k"), [(7, 5000, 20), (3, 12101, 40), (5, 100, 10), (4, 300, 300)])
def test_top_k_rows_matches_a_full_sort(rows: int, n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    s = rng.standard_normal((rows, n)).astype(np.float32)
    s[0, rng.integers(0, n, n // 3)] = -np.inf  # masked items
    s[1, :] = np.round(s[1, :], 1)  # many ties
    idx, val = top_k_rows(s, k)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :k]
    assert np.array_equal(val, np.take_along_axis(s, ref, axis=1))
    assert np.array_equal(np.take_along_axis(s, idx, axis=1), val)
    assert all(len(set(r)) == k for r in idx.tolist())


def test_all_masked_row_still_returns_k() -> None:
    s = np.full((2, 4096), -np.inf, dtype=np.float32)
    s[1, 5] = 1.0
    idx, val = top_k_rows(s, 3)
    assert idx.shape == (2, 3) and idx[1, 0] == 5 and np.isneginf(val[0]).all()

