"""The pure recommendation step: sequences in, filtered ranked lists out.

``recommend`` is what a worker runs for every micro-batch, in a thread off the
event loop: one ONNX call for all users, one FAISS search, then per-user
filtering of seen items. Users with no item the model knows get the fallback
list instead: the trending items (``serving.trending``) topped up from the
bundle's popularity list.

With a live catalogue (``serving.catalogue``), items added since the bundle was
trained are scored against the same user vectors (one product with their
tower vectors) and merged into each list by score, and withdrawn items are
excluded like seen ones. A new item in a history is read by the encoder as its
proxy (the nearest bundle item), so clicking it moves the user's vector.

The funnel: retrieval (the above) -> ranking (the bundle's ranker, when on:
one ONNX call re-scores every user's candidates, :mod:`serving.ranking`) ->
re-ranking (:mod:`serving.rerank`). With the ranker on, retrieval returns as
many items per user as the ranker was trained to order; with MMR, freshness or a
cap on, at least ``candidates``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np

from serving.bundle import ModelBundle
from serving.catalogue import EMPTY, LiveItems
from serving.content import ContentBlend, chosen_blend
from serving.list_types import SOURCE_MODEL, SOURCE_POPULAR, SOURCE_TRENDING, Ranked
from serving.newitems import CONTENT_WINDOW, content_profiles, new_item_keys
from serving.ranking import Ranker, chosen, profiles_of, ranked_rows
from serving.rerank import (
    REASON_CONTENT,
    REASON_POPULAR,
    REASON_SEQUENCE,
    REASON_TRENDING,
    Candidate,
    RerankConfig,
    cosine,
    jaccard,
    mmr_rows,
    pin_lists,
    rerank,
)
from serving.topk import top_k_rows
from serving.trending import fallback_list
from streamrec.sequences import PAD, pad_batch

NO_RULES = RerankConfig()


def popular_for(bundle: ModelBundle, seen: set[int], n: int) -> list[int]:
    return [i for i in bundle.popular if i not in seen][:n]


def reorder_stages(bundle: ModelBundle, ranking: str, blending: str,
                   ) -> tuple[Ranker | None, ContentBlend | None]:
    """The ranker and the content blend ``recommend`` runs under these modes: at most one of
    them (where the ranker runs, the blend does not)."""
    ranker = chosen(bundle.ranker, ranking)
    return ranker, None if ranker is not None else chosen_blend(bundle.blend, blending)


def describe_funnel(bundle: ModelBundle, ranking: str, rules: RerankConfig,
                    candidates: int, blending: str = "auto") -> str:
    """The stages ``recommend`` runs for ``bundle`` under these settings, in one line."""
    ranker = bundle.ranker
    if ranker is None:
        rank = "ranker: none in the bundle"
    else:
        state = "on" if chosen(ranker, ranking) is not None else "off"
        rank = (f"ranker: {state} (STREAMREC_RANKER={ranking}; the bundle's default: "
                f"{'on' if ranker.enabled else 'off'}), reorders the first {ranker.candidates}")
    blend = bundle.blend
    if blend is None:
        mix = "content blend: none in the bundle"
    else:
        runs = reorder_stages(bundle, ranking, blending)[1] is not None
        mix = (f"content blend: {'on' if runs else 'off'} (STREAMREC_CONTENT_BLEND={blending}; the "
               f"bundle's default: {'on' if blend.enabled else 'off'}; beta {blend.beta:.4g}; "
               f"not where the ranker runs), re-scores the first {blend.candidates}")
    return (f"funnel for {bundle.version}: retrieval of {candidates} candidates where a stage "
            f"reorders; {mix}; {rank}; re-ranking: {rules.describe()}")


def recommend(bundle: ModelBundle, histories: Sequence[Sequence[str]], top_n: int,
              trending: Sequence[str] = (), live: LiveItems = EMPTY,
              rules: RerankConfig = NO_RULES, candidates: int = 200,
              now_ms: int | None = None, ranking: str = "auto",
              blending: str = "auto") -> list[Ranked]:
    """Top-``top_n`` unseen items for each history (external ids, oldest first);
    ``trending``: the current trending item ids, for histories the model cannot use;
    ``live``: the catalogue's additions and withdrawals for this bundle; ``rules``: the
    re-ranking (with a rule that reorders on, retrieval returns ``candidates`` items per user
    first);
    ``ranking``: ``auto`` runs the bundle's ranker where training found it better than
    retrieval alone, ``on`` whenever the bundle has one, ``off`` never; ``blending``: the
    same for the content blend (:mod:`serving.content`), which never runs where the ranker
    does."""
    vocab = bundle.vocab
    if live.version != bundle.version:
        live = EMPTY  # built for another bundle: its vectors are in another space
    excluded = live.blocked
    if rules.blocklist:
        excluded = excluded | {i for x in rules.blocklist if (i := vocab.index(x)) is not None}
    encoded = [vocab.encode(h) for h in histories]
    seen = [set(e) | excluded if excluded else set(e) for e in encoded]
    if live.proxies:  # new items in a history: the encoder reads their nearest bundle item
        index, proxy = vocab.index, live.proxies.get
        encoded = [[x for i in h if (x := index(i) or proxy(i))] for h in histories]
    modelled = [u for u, e in enumerate(encoded) if e]
    ranker, blend = reorder_stages(bundle, ranking, blending)
    k = max(top_n, candidates if rules.reorders else 0, ranker.candidates if ranker else 0,
            blend.candidates if blend else 0,
            rules.new_item_within if rules.new_item_slot >= 0 and live.size else 0)
    batched = rules.active and _batched_mmr(rules)  # MMR in numpy for the whole batch
    per_list = replace(rules, mmr_lambda=1.0) if batched else rules
    rerank_of = _reranker(bundle, live, per_list, now_ms) if rules.active else None
    # blocked items never reach the candidates (excluded above, and new ones in _with_live):
    # with nothing but pins left per list, the lists skip the Candidate objects
    pins_only = rerank_of is not None and per_list.pins_only
    results: list[Ranked | None] = [None] * len(histories)
    if modelled:
        seqs = pad_batch([encoded[u] for u in modelled], bundle.max_len)
        vecs = bundle.encoder.encode(seqs)
        # The funnel runs on arrays: keys [B, W] (see ``vector keys``) and scores [B, W]
        # (-inf pads; each row's real candidates a prefix). Ids are decoded for the final
        # lists only.
        keys, scores = bundle.index.top_k_unseen(vecs, k, [seen[u] for u in modelled])
        best_new: list[Candidate | None] = [None] * len(modelled)  # for the new-item slot
        if live.size:
            keys, scores, best_new = _with_live(keys, scores, vecs, live,
                                                [histories[u] for u in modelled], k, rules.blocklist,
                                                rules.new_item_within, _chooser(bundle, live, rules),
                                                merge=not rules.new_item_slot_only)
        if blend is not None:
            keys, scores = blend.apply(keys, scores, [encoded[u] for u in modelled])
        if ranker is not None:
            keys, scores = _rank(bundle, live, vecs, keys, scores, [encoded[u] for u in modelled])
        if batched:  # caps and pins still run per list, below
            keys, scores = _mmr_batch(bundle, live, keys, scores, rules.mmr_lambda, top_n)
        if not rules.reorders or (batched and not rules.max_per_value):
            # what is left (pins, the blocklist) needs no more than the final top_n
            keys, scores = keys[:, :top_n], scores[:, :top_n]
        bundle_ids, live_ids = vocab.ids, live.ids
        for row, u in enumerate(modelled):
            ks = keys[row][keys[row] != PAD].tolist()
            ids = [bundle_ids[x - 1] if x > 0 else live_ids[-x - 1] for x in ks]
            sc = scores[row, :len(ks)].tolist()
            why = [REASON_SEQUENCE if x > 0 else REASON_CONTENT for x in ks]
            if pins_only:
                ids, sc, why = pin_lists(ids, sc, why, rules.pins, top_n)
            elif rerank_of is not None:
                ids, sc, why = rerank_of([Candidate(i, s, r) for i, s, r in zip(ids, sc, why,
                                                                                 strict=True)], top_n,
                                         best_new[row])
            if len(ids) < top_n:  # tiny catalogues: top up from popularity
                have = seen[u] | set(vocab.encode(ids))
                extra = [i for i in vocab.decode(popular_for(bundle, have, top_n))
                         if i not in rules.blocklist and i not in ids][:top_n - len(ids)]
                ids, sc = ids + extra, sc + [float("nan")] * len(extra)
                why = why + [REASON_POPULAR] * len(extra)
            results[u] = Ranked(ids, sc, SOURCE_MODEL, why)
    ids_of = vocab.ids
    # no scores to trade, no user vector to choose a new item by
    fallback_rules = replace(rules, mmr_lambda=1.0, freshness_boost=0.0, new_item_slot=-1)
    for u, r in enumerate(results):
        if r is None:
            popular = (ids_of[i - 1] for i in bundle.popular)  # decoded as far as needed
            banned = set(histories[u]) | live.blocked_ids | rules.blocklist
            ids, from_trending = fallback_list(trending, popular, banned, top_n)
            why = [REASON_TRENDING] * from_trending + [REASON_POPULAR] * (len(ids) - from_trending)
            sc = [float("nan")] * len(ids)
            if fallback_rules.active:
                out = rerank([Candidate(i, s, w) for i, s, w in zip(ids, sc, why, strict=True)],
                             fallback_rules, top_n, values=_values(bundle, live, rules))
                ids, sc, why = [c.item for c in out], [c.score for c in out], [c.reason for c in out]
            results[u] = Ranked(ids, sc, SOURCE_TRENDING if from_trending else SOURCE_POPULAR, why)
    return results  # type: ignore[return-value]


# Vector keys: > 0, the bundle's item index; < 0, the live catalogue's row -(key + 1);
# 0 (PAD), padding. Vectors are gathered by key without looking ids up, and a list item's
# reason follows from its key (``sequence`` from the bundle, ``content`` a new item).


def _vectors(bundle: ModelBundle, live: LiveItems, keys: np.ndarray, unit: bool = False) -> np.ndarray:
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


def _batched_mmr(rules: RerankConfig) -> bool:
    """MMR over item vectors with nothing before it that needs a list of its own."""
    return rules.mmr_lambda < 1.0 and rules.mmr_similarity == "vectors" and not rules.freshness_boost


def _mmr_batch(bundle: ModelBundle, live: LiveItems, keys: np.ndarray, scores: np.ndarray,
               lam: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every list reordered by MMR(λ) over cosine of item vectors, in one numpy pass
    (:func:`serving.rerank.mmr_rows`; the same picks as the per-list :func:`mmr`)."""
    if not keys.shape[1]:
        return keys, scores
    order = mmr_rows(scores, _vectors(bundle, live, keys, unit=True), keys != PAD, lam, n)
    return np.take_along_axis(keys, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _rank(bundle: ModelBundle, live: LiveItems, users: np.ndarray, keys: np.ndarray,
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
    new = ranker.score(users, _vectors(bundle, live, head), cand_idx, scores[:, :width], cand_attrs,
                       profiles)
    order, ranked = ranked_rows(new, scores)
    return np.take_along_axis(keys, order, axis=1), ranked


def _values(bundle: ModelBundle, live: LiveItems, rules: RerankConfig,
            ) -> Callable[[str], Sequence[str]]:
    """An item's capped values: its attribute tokens that start with ``cap_attribute``."""
    prefix = rules.cap_attribute

    def values(item: str) -> Sequence[str]:
        tokens = live.attributes.get(item) or bundle.attributes.get(item) or ()
        return [t for t in tokens if t.startswith(prefix)]
    return values


def _reranker(bundle: ModelBundle, live: LiveItems, rules: RerankConfig, now_ms: int | None,
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

    values = _values(bundle, live, rules)

    def run(cands: list[Candidate], n: int, new_item: Candidate | None,
            ) -> tuple[list[str], list[float], list[str]]:
        out = rerank(cands, rules, n, similarity=similarity, values=values, age_s=age_s,
                     new_item=new_item, is_new=live.rows.__contains__)
        return [c.item for c in out], [c.score for c in out], [c.reason for c in out]
    return run


def _with_live(keys: np.ndarray, scores: np.ndarray, vecs: np.ndarray, live: LiveItems,
               histories: Sequence[Sequence[str]], k: int, blocklist: frozenset[str] = frozenset(),
               within: int = 0, choose: _Chooser | None = None, merge: bool = True,
               ) -> tuple[np.ndarray, np.ndarray, list[Candidate | None]]:
    """The best ``k`` of each user's bundle candidates and the new items, by score (one
    space), and each user's best new item (None where none is left, or, with ``within``
    > 0, where it does not rank in the user's first ``within``: ``k`` >= ``within``
    bundle candidates tell); a new item in the user's history or on the blocklist is
    excluded like a seen one. ``choose``: the new item by a key other than the vector score
    (:mod:`serving.newitems`), and the gate on that key. ``merge`` False: the candidates stay
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
    best = [Candidate(live.ids[int(p)], float(s), REASON_CONTENT) if ok else None
            for p, s, ok in zip(pick, top, shown, strict=True)]
    if not merge:
        return keys, scores, best
    both_keys = np.concatenate([keys, np.where(np.isneginf(new_top), PAD, -new_idx - 1)], axis=1)
    both = np.concatenate([scores, new_top.astype(scores.dtype)], axis=1)
    order = np.argsort(-both, axis=1, kind="stable")[:, :k]  # ties: the bundle's item first
    return np.take_along_axis(both_keys, order, axis=1), np.take_along_axis(both, order, axis=1), best


# (new-item scores [B, n], user vectors [B, D], histories) -> (chosen row [B], shown [B])
_Chooser = Callable[[np.ndarray, np.ndarray, Sequence[Sequence[str]]], tuple[np.ndarray, np.ndarray]]


def _chooser(bundle: ModelBundle, live: LiveItems, rules: RerankConfig) -> _Chooser | None:
    """The new-item slot's choice by key (:mod:`serving.newitems`), where the deployment
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

    def __init__(self, bundle: ModelBundle, live: LiveItems) -> None:
        self.bundle, self.live = bundle, live
        self.position = live.rows  # new item id -> its catalogue row

    def rows(self, items: Sequence[str]) -> np.ndarray:
        """[n, D] vectors of ``items`` (zeros for an unknown one), one gather (:func:`_vectors`)."""
        index, position = self.bundle.vocab.index, self.position.get
        keys = np.array([[self._key(index(i), position(i)) for i in items]], dtype=np.int64)
        rows: np.ndarray = _vectors(self.bundle, self.live, keys)[0]
        return rows

    @staticmethod
    def _key(ix: int | None, pos: int | None) -> int:
        """A candidate's vector key (see ``Vector keys``): bundle index, or -(live row + 1), or 0."""
        return ix if ix is not None else (-pos - 1 if pos is not None else 0)


class _AttributeView(Mapping[str, Sequence[str]]):
    """Item id -> attribute tokens: the catalogue's records first, then the bundle's."""

    def __init__(self, bundle: ModelBundle, live: LiveItems) -> None:
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
