"""Offline evaluation, leave-one-out, two protocols (always labelled):

* ``full``: score every item, mask the user's history, rank the target;
* ``sampled``: rank the target among 100 items not in the history, drawn
  uniformly with a fixed seed (SASRec paper style).

User vectors come from any ``EncodeFn`` (the torch model in training, the ONNX
encoder of a bundle in ``streamrec evaluate``) or are given directly (BPR-MF),
so every model is ranked by the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from streamrec.sequences import Window, as_window
from training.evaluation.ranking_metrics import hr_ndcg, mask_history, ranks_from_scores

EncodeFn = Callable[[np.ndarray], np.ndarray]  # (B, L) int64 -> (B, D) float32
SAMPLED_NEGATIVES = 100
BATCH = 1024


def encode_all(encode: EncodeFn, inputs: Sequence[Sequence[int]], window: Window | int) -> np.ndarray:
    """User vectors [U, D] for all input sequences, in batches: each the ``window`` of its
    history the encoder reads (an int: the last that many items)."""
    w = as_window(window)
    return np.concatenate([encode(w.pad(inputs[lo:lo + BATCH]))
                           for lo in range(0, len(inputs), BATCH)])


def masked_scores(users: np.ndarray, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                  ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Per batch of users: ``(lo, hi, scores)``, scores [hi - lo, N + 1] by inner product
    (``item_vecs`` [N, D], row r = index r + 1), PAD and each user's history at -inf."""
    table = np.vstack([np.zeros((1, item_vecs.shape[1]), np.float32), item_vecs])  # (N+1, D)
    for lo in range(0, len(users), BATCH):
        hi = min(lo + BATCH, len(users))
        scores = users[lo:hi] @ table.T  # (b, N+1)
        mask_history(scores, inputs[lo:hi])
        yield lo, hi, scores


def full_ranks_of(users: np.ndarray, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                  targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among all items (``item_vecs`` [N, D], row r = index r+1)."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for lo, hi, scores in masked_scores(users, item_vecs, inputs):
        ranks[lo:hi] = ranks_from_scores(scores, targets[lo:hi])
    return ranks


def sampled_candidates(inputs: Sequence[Sequence[int]], targets: np.ndarray, num_items: int,
                       seed: int, negatives: int = SAMPLED_NEGATIVES) -> np.ndarray:
    """[U, 1 + negatives]: the target, then distinct uniform items outside the user's history.

    Where fewer than ``negatives`` such items exist (tiny catalogues), the row is
    padded with 0 (PAD), which scoring treats as -inf.
    """
    rng = np.random.default_rng(seed)
    cands = np.zeros((len(targets), negatives + 1), dtype=np.int64)
    for u, (h, t) in enumerate(zip(inputs, targets, strict=True)):
        banned = set(h) | {int(t)}
        want = min(negatives, num_items - len(banned))
        picked: list[int] = []
        while len(picked) < want:
            for i in rng.integers(1, num_items + 1, 2 * negatives).tolist():
                if i not in banned:
                    banned.add(i)
                    picked.append(i)
        cands[u, 0] = t
        cands[u, 1:1 + want] = picked[:want]
    return cands


def sampled_ranks_of(users: np.ndarray, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                     targets: np.ndarray, seed: int = 0) -> np.ndarray:
    cands = sampled_candidates(inputs, targets, item_vecs.shape[0], seed)
    scores = np.einsum("bd,bkd->bk", users, item_vecs[np.maximum(cands, 1) - 1])  # (U, 101)
    scores[cands == 0] = -np.inf
    return ranks_from_scores(scores, np.zeros(len(targets), dtype=np.int64))


def full_ranks(encode: EncodeFn, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
               targets: np.ndarray, max_len: Window | int) -> np.ndarray:
    return full_ranks_of(encode_all(encode, inputs, max_len), item_vecs, inputs, targets)


def sampled_ranks(encode: EncodeFn, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                  targets: np.ndarray, max_len: Window | int, seed: int = 0) -> np.ndarray:
    return sampled_ranks_of(encode_all(encode, inputs, max_len), item_vecs, inputs, targets, seed)


def evaluate_full(encode: EncodeFn, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                  targets: np.ndarray, max_len: Window | int) -> dict[str, float]:
    return hr_ndcg(full_ranks(encode, item_vecs, inputs, targets, max_len))


def evaluate_vectors(users: np.ndarray, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                     targets: np.ndarray, seed: int = 0) -> dict[str, dict[str, float]]:
    """Both protocols from given user vectors: ``{"full": {...}, "sampled": {...}}``."""
    return {"full": hr_ndcg(full_ranks_of(users, item_vecs, inputs, targets)),
            "sampled": hr_ndcg(sampled_ranks_of(users, item_vecs, inputs, targets, seed))}


def popularity_ranks(counts: np.ndarray, inputs: Sequence[Sequence[int]],
                     targets: np.ndarray) -> np.ndarray:
    """Full-protocol ranks under the most-popular baseline (``counts`` [N+1] from training)."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for lo in range(0, len(targets), BATCH):
        hi = min(lo + BATCH, len(targets))
        scores = np.tile(counts.astype(np.float64), (hi - lo, 1))
        mask_history(scores, inputs[lo:hi])
        ranks[lo:hi] = ranks_from_scores(scores, targets[lo:hi])
    return ranks


def popularity_sampled_ranks(counts: np.ndarray, inputs: Sequence[Sequence[int]],
                             targets: np.ndarray, seed: int = 0) -> np.ndarray:
    cands = sampled_candidates(inputs, targets, len(counts) - 1, seed)
    scores = counts[cands].astype(np.float64)
    scores[cands == 0] = -np.inf
    return ranks_from_scores(scores, np.zeros(len(targets), dtype=np.int64))
