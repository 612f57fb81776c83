"""Offline evaluation: full-catalogue ranking with the user's history masked.

The same function scores the torch model during training and the exported
bundle (ONNX encoder + index vectors), so the two are directly comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from serving.recommend import left_pad
from training.metrics import hr_ndcg, mask_history, ranks_from_scores

EncodeFn = Callable[[np.ndarray], np.ndarray]  # (B, L) int64 -> (B, D) float32


def full_ranks(encode: EncodeFn, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
               targets: np.ndarray, max_len: int, batch: int = 1024) -> np.ndarray:
    """0-based rank of each target among all items (``item_vecs`` [N, D], row r = index r+1)."""
    table = np.vstack([np.zeros((1, item_vecs.shape[1]), np.float32), item_vecs])  # (N+1, D)
    ranks = np.empty(len(targets), dtype=np.int64)
    for lo in range(0, len(targets), batch):
        hi = min(lo + batch, len(targets))
        users = encode(left_pad(inputs[lo:hi], max_len))  # (b, D)
        scores = users @ table.T  # (b, N+1)
        mask_history(scores, inputs[lo:hi])
        ranks[lo:hi] = ranks_from_scores(scores, targets[lo:hi])
    return ranks


def evaluate_full(encode: EncodeFn, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                  targets: np.ndarray, max_len: int) -> dict[str, float]:
    return hr_ndcg(full_ranks(encode, item_vecs, inputs, targets, max_len))


def popularity_ranks(counts: np.ndarray, inputs: Sequence[Sequence[int]],
                     targets: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Ranks under the most-popular baseline (``counts`` [N+1] from training data)."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for lo in range(0, len(targets), batch):
        hi = min(lo + batch, len(targets))
        scores = np.tile(counts.astype(np.float64), (hi - lo, 1))
        mask_history(scores, inputs[lo:hi])
        ranks[lo:hi] = ranks_from_scores(scores, targets[lo:hi])
    return ranks
