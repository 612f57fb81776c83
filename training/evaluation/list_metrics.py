"""Offline metrics of whole lists, not only of hits: diversity, coverage, novelty.

For each test user the served funnel is replayed: retrieval's top ``K``
unseen items (the bundle's encoder and index), then maximal marginal relevance
with the worker's own code (:func:`serving.rerank.mmr`, λ and similarity as
configured), and the first ``n`` items are the list. Reported per λ:

* HR@n / NDCG@n of the test target in that list (full protocol: every item
  was a candidate for retrieval, the history masked);
* **intra-list diversity**: the mean over lists of the mean pairwise
  attribute distance, ``1 − Jaccard(attrs(i), attrs(j))``;
* **coverage**: the share of the catalogue that appears in at least one list;
* **novelty**: the mean self-information ``−log2 p(i)`` of the listed items,
  ``p(i)`` = the share of training users who consumed ``i`` (at least
  ``1 / users``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.rerank import Candidate, Similarity, cosine, jaccard, mmr
from streamrec.errors import ConfigError
from training.data.attributes import MAX_ATTRS, ItemAttributes
from training.data.sequences import SequenceData, leave_one_out
from training.evaluation.evaluate import encode_all

BATCH = 1024


def diversify(idx: np.ndarray, scores: np.ndarray, lam: float, similarity: Similarity,
              n: int) -> np.ndarray:
    """[U, n] the lists after MMR(λ) over each row's candidates (the worker's code)."""
    out = np.zeros((len(idx), n), dtype=np.int64)
    for r in range(len(idx)):
        cands = [Candidate(str(int(i)), float(s)) for i, s in zip(idx[r], scores[r], strict=True)
                 if np.isfinite(s)]
        picked = mmr(cands, lam, similarity, n)[:n]
        out[r, :len(picked)] = [int(c.item) for c in picked]
    return out


def list_metrics(lists: np.ndarray, targets: np.ndarray, item_attrs: np.ndarray,
                 user_counts: np.ndarray, num_users: int) -> dict[str, float]:
    """Accuracy and list metrics (module docstring) of ``lists`` [U, n] (0 = empty slot);
    ``item_attrs`` [N + 1, A] attribute indexes (0 pads); ``user_counts`` [N + 1]: training
    users per item."""
    n = lists.shape[1]
    pos = np.where(lists == targets[:, None], np.arange(n)[None, :], n).min(axis=1)
    hit = pos < n
    ndcg = np.where(hit, 1.0 / np.log2(pos + 2.0), 0.0)
    sets = [frozenset(int(a) for a in row if a) for row in item_attrs]
    ild = []
    for row in lists:
        items = [int(i) for i in row if i]
        d = [1.0 - _jaccard(sets[a], sets[b]) for x, a in enumerate(items) for b in items[x + 1:]]
        if d:
            ild.append(float(np.mean(d)))
    listed = lists[lists > 0]
    p = np.maximum(user_counts[listed] / max(num_users, 1), 1.0 / max(num_users, 1))
    return {f"hr@{n}": float(hit.mean()), f"ndcg@{n}": float(ndcg.mean()),
            "diversity": float(np.mean(ild)) if ild else 0.0,
            "coverage": float(len(np.unique(listed)) / (len(item_attrs) - 1)),
            "novelty": float(np.mean(-np.log2(p))) if len(listed) else 0.0}


def _jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def lambda_table(idx: np.ndarray, scores: np.ndarray, item_vecs: np.ndarray, targets: np.ndarray,
                 item_attrs: np.ndarray, user_counts: np.ndarray, lambdas: Sequence[float],
                 similarity: str = "attributes", n: int = 10) -> list[dict[str, Any]]:
    """One row per λ: :func:`list_metrics` of the lists MMR(λ) makes from each user's
    candidates ``idx`` [U, K] (best first, ``scores`` their relevance; ``similarity``:
    ``attributes`` (Jaccard) or ``vectors`` (cosine of ``item_vecs``))."""
    table = np.vstack([np.zeros((1, item_vecs.shape[1]), np.float32), item_vecs])
    tokens = {str(i): [str(a) for a in row if a] for i, row in enumerate(item_attrs)}
    sim = (jaccard(lambda i: tokens[i]) if similarity == "attributes"
           else cosine(lambda items: table[[int(i) for i in items]]))
    rows = []
    for lam in lambdas:
        lists = diversify(idx, scores, lam, sim, n) if lam < 1.0 else idx[:, :n]
        rows.append({"lambda": lam, "similarity": similarity,
                     **list_metrics(lists, targets, item_attrs, user_counts, len(idx))})
    return rows


def bundle_lists(path: Path, data: SequenceData, attributes: ItemAttributes, lambdas: Sequence[float],
                 similarity: str = "attributes", candidates: int = 200, ranking: str = "auto",
                 n: int = 10) -> dict[str, Any]:
    """The λ table of a bundle as served, on the test split: its encoder and index, its
    ranker per ``ranking`` (``auto``: when training enabled it), then MMR."""
    from serving.bundle import load_bundle
    from serving.ranking import chosen, ranked_rows
    from training.evaluation.bundle import remap
    from training.models.ranker import retrieve

    bundle = load_bundle(path)
    mapped, _ = remap(data, bundle.vocab.ids)
    split = leave_one_out(mapped)
    inputs, targets = split.inputs("test"), split.targets("test")
    item_vecs = bundle.index.vectors().astype(np.float32)
    users = encode_all(bundle.encoder.encode, inputs, bundle.window)
    item_attrs = attributes.matrix(bundle.vocab.ids, MAX_ATTRS)
    ranker = chosen(bundle.ranker, ranking)
    if ranking == "on" and ranker is None:
        raise ConfigError(f"--ranking on: bundle {bundle.version} has no ranker")
    log_pop = ranker.log_pop if ranker else np.zeros(len(item_vecs) + 1, np.float32)
    r_attrs = ranker.item_attrs if ranker else np.zeros((len(item_vecs) + 1, 0), np.int64)
    c = retrieve(users, item_vecs, inputs, targets, candidates, log_pop, r_attrs,
                 ranker.num_attrs if ranker else 0)
    idx, scores = c.idx, c.scores
    if ranker is not None:  # as the worker: the first ranker.candidates ranked, the rest below
        m = min(ranker.candidates, idx.shape[1])
        head = np.concatenate([ranker.run(c.users[lo:lo + BATCH],
                                          item_vecs[np.maximum(c.idx[lo:lo + BATCH, :m], 1) - 1],
                                          c.feats[lo:lo + BATCH, :m])
                               for lo in range(0, len(c.idx), BATCH)])
        order, scores = ranked_rows(head, c.scores)
        idx = np.where(np.isfinite(scores), np.take_along_axis(c.idx, order, axis=1), 0)
    user_counts = np.zeros(len(item_vecs) + 1, dtype=np.int64)
    for seq in split.train:
        user_counts[np.unique(np.asarray(seq, dtype=np.int64))] += 1
    return {"bundle": bundle.version, "users": len(inputs), "candidates": candidates,
            "ranker": ranker is not None, "n": n,
            "protocol": "test split; lists = the funnel's top n after MMR(λ); diversity = mean "
                        "pairwise 1 − Jaccard of attributes; coverage = share of the catalogue "
                        "listed; novelty = mean −log2 of the share of training users per item",
            "rows": lambda_table(idx, scores, item_vecs, targets, item_attrs, user_counts, lambdas,
                                 similarity, n)}
