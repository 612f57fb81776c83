"""The ranking stage: re-score each user's retrieved candidates with a learned model.

The funnel's middle stage (retrieval -> **ranking** -> re-ranking). Retrieval
returns the top ``candidates`` items by inner product; the ranker (a Neural-CF
style MLP, trained by :mod:`training.models.ranker`) scores each of them from

* the user vector and the item vector (their product, and both as they are);
* :data:`FEATURES`: the retrieval score, the score's gap to the user's best
  candidate, the retrieval rank (log), the item's training popularity (log), and
  the share of the item's attributes found among the user's last
  :data:`RECENT` items.

Its output is the retrieval score plus a learned correction (the last layer
starts at zero, so an untrained ranker keeps retrieval's order). The same
feature code serves offline evaluation and the worker, so what is measured is
what runs.

Bundle files (:mod:`serving.manifest`): ``ranker.onnx`` (``user`` [B, D],
``items`` [B, K, D], ``feats`` [B, K, F] -> ``scores`` [B, K]) and
``ranker.npz`` (``log_pop`` [N + 1], ``item_attrs`` [N + 1, A] attribute
indexes over ``tokens``, and warm-up inputs with reference outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from serving.manifest import REFERENCE_ATOL

if TYPE_CHECKING:  # training imports the feature code; only serving runs a session
    import onnxruntime as ort

FEATURES = ("score", "gap", "log_rank", "log_pop", "overlap")
RECENT = 10  # the user's last items whose attributes the overlap feature reads
USER, ITEMS, FEATS, SCORES = "user", "items", "feats", "scores"


def candidate_features(scores: np.ndarray, log_pop: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """[B, K, F] features of candidates in retrieval order (``scores`` [B, K] descending per
    row; -inf marks padding, whose features are 0)."""
    real = np.isfinite(scores)
    s = np.where(real, scores, 0.0).astype(np.float32)
    top = s[:, :1]
    rank = np.log1p(np.arange(scores.shape[1], dtype=np.float32))[None, :].repeat(len(s), 0)
    feats = np.stack([s, s - top, rank, log_pop.astype(np.float32), overlap.astype(np.float32)],
                     axis=-1)
    feats[~real] = 0.0
    return feats


def ranked_rows(head: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lists after ranking, for a batch: ``head`` [B, M] the ranker's scores of each row's
    first M candidates, ``scores`` [B, K] (K >= M) the retrieval scores in retrieval order;
    -inf marks padding, and each row's real candidates are a prefix. Returns the positions
    in the funnel's order [B, K] (the head by the ranker's scores, stable; then the tail in
    its own order; padding last) and the lists' scores [B, K]: the head's, then the tail's
    retrieval scores shifted to sit just under the head's lowest, so each list stays in
    descending score order for whatever reads scores next (MMR's relevance, the stored
    list). The worker and offline evaluation both order lists with it."""
    b, m = head.shape
    head = np.where(np.isfinite(scores[:, :m]), head, -np.inf)
    o = np.argsort(-head, axis=1, kind="stable")  # -inf (padding) last
    order = np.concatenate([o, np.broadcast_to(np.arange(m, scores.shape[1]), (b, scores.shape[1] - m))],
                           axis=1)
    out = np.concatenate([np.take_along_axis(head, o, axis=1), scores[:, m:]], axis=1)
    if scores.shape[1] > m:
        real_head = np.isfinite(head)
        low = np.where(real_head, head, np.inf).min(axis=1)  # the head's lowest real score
        first = scores[:, m]
        shift = np.where(real_head.any(axis=1) & np.isfinite(first), low - first - 1e-3, 0.0)
        out[:, m:] = scores[:, m:] + shift[:, None].astype(scores.dtype)
    return order, out


def attribute_overlap(profiles: np.ndarray, cand_attrs: np.ndarray) -> np.ndarray:
    """[B, K] share of each candidate's attributes present in its user's profile.

    ``profiles`` [B, A + 1] bool (column 0, padding, False); ``cand_attrs`` [B, K, J]
    attribute indexes (0 pads). Candidates without attributes get 0.
    """
    if cand_attrs.shape[-1] == 0:
        return np.zeros(cand_attrs.shape[:2], dtype=np.float32)
    rows = np.arange(len(profiles))[:, None, None]
    hits = profiles[rows, cand_attrs] & (cand_attrs > 0)
    have = (cand_attrs > 0).sum(-1)
    share: np.ndarray = (hits.sum(-1) / np.maximum(have, 1)).astype(np.float32)
    return share


def profiles_of(histories: Sequence[Sequence[int]], item_attrs: np.ndarray, num_attrs: int,
                recent: int = RECENT) -> np.ndarray:
    """[B, A + 1] bool: the attributes of each history's last ``recent`` items (indexes)."""
    out = np.zeros((len(histories), num_attrs + 1), dtype=bool)
    if item_attrs.shape[1] == 0:
        return out
    for r, h in enumerate(histories):
        if len(h):
            out[r, item_attrs[np.asarray(h[-recent:], dtype=np.int64)].ravel()] = True
    out[:, 0] = False
    return out


def matches_reference(out: np.ndarray, ref: np.ndarray) -> bool:
    """Ranker scores against reference ones (export parity, load warm-up): same shape,
    finite, and within ``REFERENCE_ATOL`` relative to the scores' scale (inner products
    plus a correction, not unit-sized)."""
    return bool(out.shape == ref.shape and np.isfinite(out).all() and
                float(np.abs(out - ref).max()) <= REFERENCE_ATOL * max(1.0, float(np.abs(ref).max())))


def chosen(ranker: Ranker | None, mode: str) -> Ranker | None:
    """The ranker to run under ``STREAMREC_RANKER`` ``mode``: ``on`` whenever there is one,
    ``auto`` where training measured it better than retrieval alone, ``off`` never."""
    if ranker is None or mode == "off" or (mode == "auto" and not ranker.enabled):
        return None
    return ranker


class Ranker:
    """A bundle's ranker: ``score(...)`` -> [B, K] new scores for retrieved candidates."""

    def __init__(self, session: ort.InferenceSession, log_pop: np.ndarray, item_attrs: np.ndarray,
                 tokens: Sequence[str], enabled: bool, candidates: int = 100) -> None:
        self.session = session
        self.candidates = candidates  # as many as it was trained to order; the rest keep their place
        self.log_pop = log_pop.astype(np.float32)  # [N + 1]; 0 for PAD and new items
        self.item_attrs = item_attrs.astype(np.int64)  # [N + 1, A]
        self.token_index = {t: i + 1 for i, t in enumerate(tokens)}
        self.num_attrs = len(tokens)
        self.enabled = enabled  # what training measured: on by default only if it beat retrieval

    def attrs_of_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """[A] attribute indexes of a new item's tokens (unknown ones dropped)."""
        row = np.zeros(self.item_attrs.shape[1], dtype=np.int64)
        known = [self.token_index[t] for t in dict.fromkeys(tokens) if t in self.token_index]
        row[:min(len(known), len(row))] = known[:len(row)]
        return row

    def run(self, users: np.ndarray, items: np.ndarray, feats: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {USER: users.astype(np.float32),
                                         ITEMS: items.astype(np.float32),
                                         FEATS: feats.astype(np.float32)})
        return np.asarray(out, dtype=np.float32)

    def score(self, users: np.ndarray, cand_vecs: np.ndarray, cand_idx: np.ndarray,
              cand_scores: np.ndarray, cand_attrs: np.ndarray, profiles: np.ndarray) -> np.ndarray:
        """Ranker scores [B, K] (-inf where ``cand_scores`` is -inf, i.e. padding).

        ``cand_idx`` [B, K]: bundle item indexes (0 for new items and padding);
        ``cand_attrs`` [B, K, A]: the candidates' attribute indexes; ``profiles``:
        :func:`profiles_of` the users' histories.
        """
        feats = candidate_features(cand_scores, self.log_pop[cand_idx],
                                   attribute_overlap(profiles, cand_attrs))
        out = self.run(users, cand_vecs, feats)
        return np.where(np.isfinite(cand_scores), out, -np.inf)
