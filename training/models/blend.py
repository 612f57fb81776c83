"""The content blend's weight (:mod:`serving.content_blend`), chosen on the validation split.

``streamrec train`` with attributes scores the trained model's validation users
through the worker's own blend (:meth:`serving.content_blend.ContentBlend.apply` over
the first ``candidates`` retrieved items) for each relative weight in
:data:`BETAS` (times the spread of the retrieval scores over the spread of the
overlaps, among the validation users' candidates, so the grid fits any
model's scale), keeps the best, and reports retrieval alone and with the blend
on the validation and test splits. The blend is ``enabled`` (on by default in
the worker) only where it beat retrieval alone on validation. The test split
never chooses anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from serving.content_blend import ContentBlend
from serving.topk import top_k_rows
from training.data.attributes import ItemAttributes
from training.evaluation.evaluate import masked_scores
from training.evaluation.ranking_metrics import hr_ndcg

BETAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def blend_of(attributes: ItemAttributes, items: Sequence[str], candidates: int, max_len: int,
             beta: float = 0.0) -> ContentBlend:
    """The blend over the catalogue ``items`` (item index r = ``items[r - 1]``) with every
    attribute token of each, as a bundle's ``attributes.json`` holds them and its loader
    builds it."""
    return ContentBlend.of_catalogue(attributes.index(), items, attributes.of, beta, candidates,
                                     True, max_len)


def candidate_lists(users: np.ndarray, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                    candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's first ``candidates`` unseen items by score, as retrieval returns them:
    item indexes [U, K] and scores [U, K] (descending)."""
    keys, scores = [], []
    for _, _, s in masked_scores(users, item_vecs, inputs):
        top, best = top_k_rows(s, min(candidates, s.shape[1] - 1))  # column 0: PAD, never
        keys.append(top)
        scores.append(best.astype(np.float32))
    return np.concatenate(keys), np.concatenate(scores)


def blended_ranks(blend: ContentBlend, keys: np.ndarray, scores: np.ndarray,
                  inputs: Sequence[Sequence[int]], targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target in its list after the blend (``keys``/``scores`` from
    :func:`candidate_lists`); a target outside the candidates (or behind a -inf) ranks
    past every list."""
    out = np.full(len(targets), keys.shape[1] + 1, dtype=np.int64)
    for lo in range(0, len(targets), 1024):
        hi = min(lo + 1024, len(targets))
        k, s = blend.apply(keys[lo:hi], scores[lo:hi], inputs[lo:hi])
        hit = (k == targets[lo:hi, None]) & np.isfinite(s)
        rows, cols = np.nonzero(hit)
        out[lo + rows] = cols
    return out


def scale(blend: ContentBlend, keys: np.ndarray, scores: np.ndarray,
          inputs: Sequence[Sequence[int]]) -> float:
    """The spread of the candidates' retrieval scores over that of their overlaps (1 where
    the overlaps do not vary)."""
    n = min(len(keys), 2000)
    ov = blend.overlap(blend.profiles(inputs[:n]), keys[:n])
    s = scores[:n][np.isfinite(scores[:n])]
    spread = float(np.std(ov))
    return float(np.std(s)) / spread if spread > 0 else 1.0


Scored = tuple[np.ndarray, Sequence[Sequence[int]], np.ndarray]  # user vectors, inputs, targets


def blend_test(base: ContentBlend, chosen: ContentBlend, item_vecs: np.ndarray, test: Scored,
               candidates: int) -> dict[str, dict[str, float]]:
    """Retrieval alone (``base``) beside the ``chosen`` blend on ``test``: HR/NDCG over the
    first ``candidates`` retrieved items, history masked."""
    t_users, t_inputs, t_targets = test
    t_keys, t_scores = candidate_lists(t_users, item_vecs, t_inputs, candidates)
    return {"retrieval": hr_ndcg(blended_ranks(base, t_keys, t_scores, t_inputs, t_targets)),
            "blend": hr_ndcg(blended_ranks(chosen, t_keys, t_scores, t_inputs, t_targets))}


def fit_blend(attributes: ItemAttributes, items: Sequence[str], item_vecs: np.ndarray,
              valid: Scored, test: Scored | None, candidates: int, max_len: int,
              ) -> tuple[ContentBlend, dict[str, Any]]:
    """The blend with the weight that scores best on ``valid`` (user vectors, inputs,
    targets), and its report: validation NDCG@10 for every weight, and retrieval alone
    beside the blend on both splits (full ranking over the candidates, history masked;
    the test split only where ``test`` is given: :func:`blend_test` scores it later)."""
    base = blend_of(attributes, items, candidates, max_len)
    v_users, v_inputs, v_targets = valid
    v_keys, v_scores = candidate_lists(v_users, item_vecs, v_inputs, candidates)
    unit = scale(base, v_keys, v_scores, v_inputs)
    alone = hr_ndcg(blended_ranks(base, v_keys, v_scores, v_inputs, v_targets))
    by_beta = {b: hr_ndcg(blended_ranks(replace(base, beta=b * unit), v_keys, v_scores, v_inputs, v_targets))
               for b in BETAS}
    best = max(BETAS, key=lambda b: by_beta[b]["ndcg@10"])
    enabled = by_beta[best]["ndcg@10"] > alone["ndcg@10"]
    chosen = replace(base, beta=best * unit, enabled=enabled)
    report = {
        "enabled": enabled, "beta": chosen.beta, "beta_relative": best, "candidates": candidates,
        "max_len": max_len,
        "valid": {"retrieval": alone, "blend": by_beta[best],
                  "ndcg@10_by_beta_relative": {str(b): by_beta[b]["ndcg@10"] for b in BETAS}},
        **({"test": blend_test(base, chosen, item_vecs, test, candidates)} if test is not None else {}),
        "protocol": f"leave-one-out; the first {candidates} retrieved unseen items re-scored "
                    "(serving.content_blend), the rest ranked past every list"}
    return chosen, report

