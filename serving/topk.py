"""Exact per-row top-k for a dense score matrix, faster than argpartition when k << N.

A row's columns are dealt into ``blocks`` interleaved blocks (block c holds
columns c, c + blocks, c + 2·blocks, …). The k-th largest of the block maxima
is a lower bound on the row's k-th largest score (each of those k blocks holds
an item at least that large), so only the items scoring at or above it can be
in the top k: one vectorised compare over the row finds them, and only those
few (about 1.1–1.2 k per row) are sorted.

Interleaved blocks, not runs of adjacent columns, because their maxima are
element-wise maxima of contiguous slices of the row; measured for 256 rows x
12,101 scores: 0.7–1.6 ms, against 4–7.7 ms for maxima over runs (strided
reductions), and ``np.argpartition`` alone takes 24.5 ms for k = 200.
"""

from __future__ import annotations

import numpy as np

MAX_BLOCK = 64  # items per block (a power of two), at most
MIN_BLOCK = 4  # fewer per block: the plain partial sort


def block_size(n: int, k: int) -> int:
    """Items per block for a row of ``n`` and top ``k``: the largest power of two up to
    :data:`MAX_BLOCK` that leaves at least ``2k`` blocks (enough that the bound sits near
    the k-th score); 0 where even :data:`MIN_BLOCK` does not (use a plain partial sort)."""
    size = MAX_BLOCK
    while size >= MIN_BLOCK and n // size < 2 * k:
        size //= 2
    return size if size >= MIN_BLOCK else 0


def _descending_key(rows: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """int64 sort keys ordering by row, then by float32 value descending (exact: the value's
    IEEE bits mapped to an order-preserving unsigned integer, then inverted)."""
    bits = (vals.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # + 0: -0.0 sorts as 0.0
    ascending = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    descending = (~ascending).astype(np.int64)
    key: np.ndarray = (rows.astype(np.int64) << 32) | descending
    return key


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [B, k], scores [B, k]) of the largest entries per row, best first.

    Exact; equal scores in column order (on the plain partial sort, used when ``k`` is
    near ``N``, in an unspecified order). ``scores`` may contain -inf (masked items).
    """
    b, n = scores.shape
    k = min(k, n)
    size = block_size(n, k)
    if not size:  # small catalogue or large k: a plain partial sort is cheap enough
        # partitioned at n - k (the k largest last), not -scores at k: no negated copy
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
        part = np.take_along_axis(scores, idx, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)
    blocks = n // size
    bmax = scores[:, :blocks].copy()  # columns past size * blocks are in no block: still exact
    for j in range(1, size):
        np.maximum(bmax, scores[:, j * blocks:(j + 1) * blocks], out=bmax)
    bound = np.partition(bmax, blocks - k, axis=1)[:, blocks - k]  # k-th largest block max
    flat = np.flatnonzero(scores >= bound[:, None])  # >= k per row, row-major: columns ascending
    rows, cols = np.divmod(flat, n)
    vals = scores.ravel()[flat] if scores.flags.c_contiguous else scores[rows, cols]
    order = np.argsort(_descending_key(rows, vals), kind="stable")  # ties keep column order
    starts = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=b))[:-1]))
    take = order[starts[:, None] + np.arange(k)[None, :]]  # (B, k)
    return cols[take], vals[take]
