"""Exact per-row top-k for a dense score matrix, faster than argpartition when k << N.

The k-th largest of the row's block maxima is a lower bound on the k-th largest
score (each of those k blocks holds an item at least that large), so only
items scoring at or above it can be in the top k. Those few candidates are
sorted; everything else is touched once by a vectorised compare.
"""

from __future__ import annotations

import numpy as np

BLOCK = 64  # a power of two (see _block_max)


def _block_max(view: np.ndarray) -> np.ndarray:
    """Max over the last axis (a power of two) by pairwise halving.

    ``view.max(axis=2)`` reduces 64 elements at a time through numpy's generic
    reduction loop: 11.5 ms for 256 x 12,101 scores; six vectorised ``maximum``
    calls over halving widths take 2.6 ms.
    """
    w = view.shape[-1]
    while w > 1:
        w //= 2
        view = np.maximum(view[..., :w], view[..., w:2 * w])
    return view[..., 0]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [B, k], scores [B, k]) of the largest entries per row, best first.

    Exact (equal scores in column order on the blocked path; in the plain partial sort, in
    an unspecified order). ``scores`` may contain -inf (masked items).
    """
    b, n = scores.shape
    k = min(k, n)
    blocks = n // BLOCK
    if blocks < 2 * k:  # small catalogue or large k: a plain partial sort is cheap enough
        # partitioned at n - k (the k largest last), not -scores at k: no negated copy
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
        part = np.take_along_axis(scores, idx, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)
    cut = blocks * BLOCK
    view = scores[:, :cut].reshape(b, blocks, BLOCK)
    bmax = _block_max(view)  # (B, blocks)
    bound = np.partition(bmax, blocks - k, axis=1)[:, blocks - k]  # k-th largest block max
    r, blk = np.nonzero(bmax >= bound[:, None])  # candidate blocks: >= k per row
    rows = np.repeat(r, BLOCK)
    cols = (blk[:, None] * BLOCK + np.arange(BLOCK)).ravel()
    vals = view[r, blk].ravel()
    if cut < n:  # the last partial block: always a candidate
        tail = n - cut
        rows = np.concatenate([rows, np.repeat(np.arange(b), tail)])
        cols = np.concatenate([cols, np.tile(np.arange(cut, n), b)])
        vals = np.concatenate([vals, scores[:, cut:].ravel()])
    keep = vals >= bound[rows]
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))  # by row, then score desc, then column
    starts = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=b))[:-1]))
    take = starts[:, None] + np.arange(k)[None, :]  # (B, k) positions in the sorted candidates
    return cols[order][take], vals[order][take]
