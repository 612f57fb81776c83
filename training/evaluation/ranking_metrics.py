"""Ranking metrics for leave-one-out evaluation (pure numpy).

``rank`` is 0-based: the number of candidate items scored above the target,
plus ties counted against it (pessimistic, so constant scores earn nothing).
HR@K = mean(rank < K); NDCG@K = mean(1/log2(rank + 2) if rank < K else 0):
with one relevant item the ideal DCG is 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (5, 10, 20)


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based pessimistic rank of ``targets`` [B] in ``scores`` [B, N] (masked = -inf)."""
    t = scores[np.arange(len(targets)), targets][:, None]
    higher = (scores > t).sum(axis=1)
    ties = (scores == t).sum(axis=1) - 1
    return higher + ties


def mask_history(scores: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
    """Set the scores of PAD (column 0) and of each user's history items to -inf, in place."""
    scores[:, 0] = -np.inf
    rows = [np.full(len(h), r) for r, h in enumerate(histories) if len(h)]
    if rows:
        cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories if len(h)])
        scores[np.concatenate(rows), cols] = -np.inf


def hr_ndcg(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
    return out
