"""The funnel's arrays: candidate keys, their vectors, and the steps the stages run on them.

Vector keys: > 0, the bundle's item index; < 0, the live catalogue's row
-(key + 1); 0 (PAD), padding. Vectors are gathered by key without looking ids
up, and a list item's reason follows from its key (``sequence`` from the
bundle, ``content`` a new item). The stages that use these are in
:mod:`serving.funnel`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from serving.bundle import ModelBundle
from serving.catalogue import CatalogueView
from serving.new_item_slot import CONTENT_WINDOW, content_profiles, new_item_keys
from serving.ranking import profiles_of, ranked_rows
from serving.rerank import (
    REASON_NEW_ITEM,
    Candidate,
    RerankConfig,
    cosine,
    jaccard,
    mmr_rows,
    rerank,
)
from serving.topk import top_k_rows
from streamrec.sequences import PAD


def item_vectors(bundle: ModelBundle, live: CatalogueView, keys: np.ndarray, unit: bool = False) -> np.ndarray:
    """[B, W, D] the vectors of ``keys`` [B, W] (0: padding, a zero vector); ``unit``: scaled
    to unit length (zero vectors stay zero)."""
    mine = keys > 0
    dense = bundle.index.unit_dense if unit else bundle.index.dense
    if dense is not None:  # one gather (row 0 for non-bundle keys, zeroed below)
        out = np.take(dense, np.where(mine, keys - 1, 0), axis=0)
        out[~mine] = 0.0
    else:
        out = np.zeros((*keys.shape, bundle.manifest.dim), dtype=np.float32)
        for pos in zip(*np.nonzero(mine), strict=True):
            out[pos] = bundle.index.vector(int(keys[pos]))
        if unit:
            out[mine] = _unit(out[mine])
    new = keys < 0
    if new.any():
        out[new] = _unit(live.vecs[-keys[new] - 1]) if unit else live.vecs[-keys[new] - 1]
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    out: np.ndarray = v / np.where(norms > 0, norms, 1.0)
    return out


def batched_mmr(rules: RerankConfig) -> bool:
    """MMR over item vectors with nothing before it that needs a list of its own."""
    return rules.mmr_lambda < 1.0 and rules.mmr_similarity == "vectors" and not rules.freshness_boost


def mmr_batch(bundle: ModelBundle, live: CatalogueView, keys: np.ndarray, scores: np.ndarray,
               lam: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every list reordered by MMR(λ) over cosine of item vectors, in one numpy pass
    (:func:`serving.rerank.mmr_rows`; the same picks as the per-list :func:`mmr`)."""
    if not keys.shape[1]:
        return keys, scores
    order = mmr_rows(scores, item_vectors(bundle, live, keys, unit=True), keys != PAD, lam, n)
    return np.take_along_axis(keys, order, axis=1), np.take_along_axis(scores, order, axis=1)


def rank_rows(bundle: ModelBundle, live: CatalogueView, users: np.ndarray, keys: np.ndarray,
          scores: np.ndarray, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Every user's first ``ranker.candidates`` candidates re-scored by the bundle's ranker in
    one call, and re-sorted (new items: their tower vectors and attribute tokens, no
    training popularity); candidates past those keep retrieval's order below them
    (:func:`serving.ranking.ranked_rows`)."""
    ranker = bundle.ranker
    assert ranker is not None
    width = min(keys.shape[1], ranker.candidates)
    if not width:
        return keys, scores
    head = keys[:, :width]
    cand_idx = np.maximum(head, 0)
    cand_attrs = ranker.item_attrs[cand_idx]
    for r, c in zip(*np.nonzero(head < 0), strict=True):  # new items: attributes by token
        if tokens := live.attributes.get(live.ids[-int(head[r, c]) - 1]):
            cand_attrs[r, c] = ranker.attrs_of_tokens(tokens)
    profiles = profiles_of(histories, ranker.item_attrs, ranker.num_attrs)
    new = ranker.score(users, item_vectors(bundle, live, head), cand_idx, scores[:, :width], cand_attrs,
                       profiles)
    order, ranked = ranked_rows(new, scores)
    return np.take_along_axis(keys, order, axis=1), ranked


def capped_values(bundle: ModelBundle, live: CatalogueView, rules: RerankConfig,
            ) -> Callable[[str], Sequence[str]]:
    """An item's capped values: its attribute tokens that start with ``cap_attribute``."""
    prefix = rules.cap_attribute

    def values(item: str) -> Sequence[str]:
        tokens = live.attributes.get(item) or bundle.attributes.get(item) or ()
        return [t for t in tokens if t.startswith(prefix)]
    return values


def list_reranker(bundle: ModelBundle, live: CatalogueView, rules: RerankConfig, now_ms: int | None,
              ) -> Callable[[list[Candidate], int, Candidate | None],
                            tuple[list[str], list[float], list[str]]]:
    """The re-ranking step of one batch, with its similarity, capped values and item ages."""
    now = time.time() * 1000 if now_ms is None else now_ms
    if rules.mmr_similarity == "attributes":
        view = _AttributeView(bundle, live)
        similarity = jaccard(lambda i: view.get(i) or ())
    else:
        similarity = cosine(_VectorView(bundle, live).rows)

    def age_s(item: str) -> float | None:
        ts = live.stamped_ms.get(item)
        return None if ts is None else (now - ts) / 1000

    values = capped_values(bundle, live, rules)

    def run(cands: list[Candidate], n: int, new_item: Candidate | None,
            ) -> tuple[list[str], list[float], list[str]]:
        out = rerank(cands, rules, n, similarity=similarity, values=values, age_s=age_s,
                     new_item=new_item, is_new=live.rows.__contains__)
        return [c.item for c in out], [c.score for c in out], [c.reason for c in out]
    return run


def with_new_items(keys: np.ndarray, scores: np.ndarray, vecs: np.ndarray, live: CatalogueView,
               histories: Sequence[Sequence[str]], k: int, blocklist: frozenset[str] = frozenset(),
               within: int = 0, choose: Chooser | None = None, merge: bool = True,
               ) -> tuple[np.ndarray, np.ndarray, list[Candidate | None]]:
    """The best ``k`` of each user's bundle candidates and the new items, by score (one
    space), and each user's best new item (None where none is left, or, with ``within``
    > 0, where it does not rank in the user's first ``within``: ``k`` >= ``within``
    bundle candidates tell); a new item in the user's history or on the blocklist is
    excluded like a seen one. ``choose``: the new item by a key other than the vector score
    (:mod:`serving.new_item_slot`), and the gate on that key. ``merge`` False: the candidates stay
    the bundle's (new items reach the list through the slot only)."""
    new_scores = vecs @ live.vecs.T  # (B, K)
    position = live.rows
    if blocked := [p for i in blocklist if (p := position.get(i)) is not None]:
        new_scores[:, blocked] = -np.inf
    for row, h in enumerate(histories):
        for item in h:
            if (p := position.get(item)) is not None:
                new_scores[row, p] = -np.inf
    new_idx, new_top = top_k_rows(new_scores, min(k if merge else 1, live.size))
    if choose is None:
        pick, top = new_idx[:, 0], new_top[:, 0].astype(scores.dtype)
        shown = np.isfinite(top)
    else:
        pick, shown = choose(new_scores, vecs, histories)
        top = new_scores[np.arange(len(pick)), pick].astype(scores.dtype)
        shown &= np.isfinite(top)
    if within > 0:  # its rank: the bundle candidates scoring above it
        shown &= (scores > top[:, None]).sum(axis=1) < within
    best = [Candidate(live.ids[int(p)], float(s), REASON_NEW_ITEM) if ok else None
            for p, s, ok in zip(pick, top, shown, strict=True)]
    if not merge:
        return keys, scores, best
    both_keys = np.concatenate([keys, np.where(np.isneginf(new_top), PAD, -new_idx - 1)], axis=1)
    both = np.concatenate([scores, new_top.astype(scores.dtype)], axis=1)
    order = np.argsort(-both, axis=1, kind="stable")[:, :k]  # ties: the bundle's item first
    return np.take_along_axis(both_keys, order, axis=1), np.take_along_axis(both, order, axis=1), best


# (new-item scores [B, n], user vectors [B, D], histories) -> (chosen row [B], shown [B])
Chooser = Callable[[np.ndarray, np.ndarray, Sequence[Sequence[str]]], tuple[np.ndarray, np.ndarray]]


def new_item_chooser(bundle: ModelBundle, live: CatalogueView, rules: RerankConfig) -> Chooser | None:
    """The new-item slot's choice by key (:mod:`serving.new_item_slot`), where the deployment
    sets a content weight or a minimum key; None: by vector score, ungated."""
    if rules.new_item_slot < 0 or (rules.new_item_content_weight <= 0
                                   and rules.new_item_min_key == -math.inf):
        return None
    weight, least = rules.new_item_content_weight, rules.new_item_min_key
    attrs = _AttributeView(bundle, live)

    def choose(new_scores: np.ndarray, vecs: np.ndarray, histories: Sequence[Sequence[str]],
               ) -> tuple[np.ndarray, np.ndarray]:
        profiles = items = None
        if weight > 0:
            columns, items = live.content
            column, cache = columns.get, live.columns_of

            def columns_of(item: str) -> tuple[int, ...]:
                got = cache.get(item)
                if got is None:
                    got = cache[item] = tuple({c for t in attrs.get(item) or ()
                                               if (c := column(t)) is not None})
                return got
            profiles = content_profiles([[columns_of(i) for i in h[-CONTENT_WINDOW:]]
                                         for h in histories], len(columns))
        keys = new_item_keys(new_scores, vecs, weight, profiles, items)
        pick = keys.argmax(axis=1)
        return pick, keys[np.arange(len(pick)), pick] >= least
    return choose


class _VectorView:
    """Item vectors by id: the bundle's index rows and the live items' tower vectors."""

    def __init__(self, bundle: ModelBundle, live: CatalogueView) -> None:
        self.bundle, self.live = bundle, live
        self.position = live.rows  # new item id -> its catalogue row

    def rows(self, items: Sequence[str]) -> np.ndarray:
        """[n, D] vectors of ``items`` (zeros for an unknown one), one gather (:func:`item_vectors`)."""
        index, position = self.bundle.vocab.index, self.position.get
        keys = np.array([[self._key(index(i), position(i)) for i in items]], dtype=np.int64)
        rows: np.ndarray = item_vectors(self.bundle, self.live, keys)[0]
        return rows

    @staticmethod
    def _key(ix: int | None, pos: int | None) -> int:
        """A candidate's vector key (see ``Vector keys``): bundle index, or -(live row + 1), or 0."""
        return ix if ix is not None else (-pos - 1 if pos is not None else 0)


class _AttributeView(Mapping[str, Sequence[str]]):
    """Item id -> attribute tokens: the catalogue's records first, then the bundle's."""

    def __init__(self, bundle: ModelBundle, live: CatalogueView) -> None:
        self.bundle, self.live = bundle, live

    def __getitem__(self, item: str) -> Sequence[str]:
        got = self.live.attributes.get(item) or self.bundle.attributes.get(item)
        if got is None:
            raise KeyError(item)
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self.bundle.attributes)

    def __len__(self) -> int:
        return len(self.bundle.attributes)
