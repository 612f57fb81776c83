"""The funnel: a micro-batch of histories in, one ranked list per user out, in five stages.

::

    candidates ─► blend ─► rank ─► rerank ─► fill
    (index +      (content   (the       (MMR, caps,  (popularity top-up,
     new items)    blend)     ranker)    pins, slot)  trending fallback)

A :class:`Funnel` is a value: its :class:`FunnelConfig` (built from settings in
one place, :meth:`FunnelConfig.from_settings`) and a bundle decide which stages
run (:class:`Plan`), and :meth:`Funnel.run` runs them. A worker may hold more
than one funnel (an experiment's arms, each with its own bundle or settings).

The stages pass a :class:`Slate` between them: the modelled users' candidates as
arrays, keys [B, W] and scores [B, W] (``-inf`` pads; each row's real candidates
a prefix; keys as in :mod:`serving.slate`). Ids are decoded only for the final
lists. Each stage is a pure function of its inputs; what a stage does not run
for this plan it passes through unchanged.

:func:`recommend` runs a funnel once, for callers that have no funnel of their
own (offline evaluation, benchmarks, tests). The worker runs it in a thread off
the event loop: one ONNX call for all users, one FAISS search, then per-user
filtering. Users with no item the model knows get the fallback list: the
trending items (:mod:`serving.trending`) topped up from the bundle's popularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np

from serving.bundle import ModelBundle
from serving.catalogue import EMPTY, CatalogueView
from serving.content_blend import ContentBlend, chosen_blend
from serving.list_types import SOURCE_MODEL, SOURCE_POPULAR, SOURCE_TRENDING, Ranked
from serving.ranking import Ranker, chosen
from serving.rerank import (
    REASON_NEW_ITEM,
    REASON_POPULAR,
    REASON_SEQUENCE,
    REASON_TRENDING,
    Candidate,
    RerankConfig,
    pin_lists,
    rerank,
)
from serving.slate import (
    batched_mmr,
    capped_values,
    list_reranker,
    mmr_batch,
    new_item_chooser,
    rank_rows,
    with_new_items,
)
from serving.trending import fallback_list
from streamrec.sequences import PAD, pad_batch

if TYPE_CHECKING:
    from streamrec.settings import Settings

Mode = Literal["auto", "on", "off"]
NO_RULES = RerankConfig()


@dataclass(frozen=True)
class FunnelConfig:
    """What a deployment asks of its funnel. ``ranking`` and ``blending``: ``auto`` runs the
    bundle's ranker (content blend) where training measured it better than retrieval
    alone, ``on`` whenever the bundle has one, ``off`` never; the blend never runs where
    the ranker does. With a rule that reorders, retrieval returns ``candidates`` items."""

    top_n: int = 20
    candidates: int = 200
    rules: RerankConfig = NO_RULES
    ranking: Mode = "auto"
    blending: Mode = "auto"

    @classmethod
    def from_settings(cls, s: Settings) -> FunnelConfig:
        """The deployment's funnel (``STREAMREC_TOP_N``, ``_CANDIDATES``, ``_RANKER``,
        ``_CONTENT_BLEND``, ``_RERANK_*``); a malformed rule is a ConfigError."""
        return cls(top_n=s.top_n, candidates=s.candidates, rules=RerankConfig.from_settings(s),
                   ranking=s.ranker, blending=s.content_blend)

    def with_overrides(self, ranking: Mode | None = None,
                       mmr_lambda: float | None = None) -> FunnelConfig:
        """This configuration with an experiment arm's settings (None: unchanged)."""
        out = self if ranking is None else replace(self, ranking=ranking)
        return out if mmr_lambda is None else replace(out, rules=replace(out.rules,
                                                                         mmr_lambda=mmr_lambda))


@dataclass(frozen=True)
class Batch:
    """One micro-batch: each user's history (external ids, oldest first), the current
    trending items, the live catalogue's additions and withdrawals, and the time the
    freshness rule ages items against (None: now).

    ``users`` (the users' ids) lets a bundle with a step encoder use each user's cached
    encoder state (:mod:`serving.step_encoder`); ``counts``, the events each session has
    applied, places a history that the session has cut short (its oldest items dropped)
    in the user's whole sequence, so the encoded window starts where it would have. None:
    each history is the whole sequence."""

    histories: Sequence[Sequence[str]]
    trending: Sequence[str] = ()
    live: CatalogueView = EMPTY
    now_ms: int | None = None
    users: Sequence[str] | None = None
    counts: Sequence[int] | None = None


@dataclass(frozen=True)
class Users:
    """The batch's users as the bundle sees them: histories as item indexes (new items
    read as their proxies), what each may not be shown, and the users the model can
    encode (those with at least one known item)."""

    encoded: list[list[int]]
    seen: list[AbstractSet[int]]
    modelled: list[int]


@dataclass(frozen=True)
class Slate:
    """The modelled users' candidates: ``keys`` [B, W], ``scores`` [B, W], user vectors
    ``vecs`` [B, D], each user's best new item for the slot (None: none), and the rows'
    histories as item indexes (the blend's and ranker's profiles)."""

    keys: np.ndarray
    scores: np.ndarray
    vecs: np.ndarray
    best_new: list[Candidate | None]
    histories: list[list[int]]


@dataclass(frozen=True)
class Plan:
    """The stages one funnel runs for one bundle and batch, and the width they need."""

    config: FunnelConfig
    ranker: Ranker | None
    blend: ContentBlend | None
    width: int  # candidates per user retrieval returns
    batched: bool  # MMR over vectors for the whole batch (caps and pins still per list)
    per_list: RerankConfig  # the rules left for each list

    @property
    def rules(self) -> RerankConfig:
        return self.config.rules


class Funnel:
    """The five stages under one :class:`FunnelConfig`. Immutable; safe to share."""

    def __init__(self, config: FunnelConfig) -> None:
        self.config = config

    def reorder_stages(self, bundle: ModelBundle) -> tuple[Ranker | None, ContentBlend | None]:
        """The ranker and the content blend this funnel runs for ``bundle``: at most one
        (where the ranker runs, the blend does not)."""
        ranker = chosen(bundle.ranker, self.config.ranking)
        return ranker, None if ranker is not None else chosen_blend(bundle.blend, self.config.blending)

    def plan(self, bundle: ModelBundle, live: CatalogueView) -> Plan:
        c, rules = self.config, self.config.rules
        ranker, blend = self.reorder_stages(bundle)
        width = max(c.top_n, c.candidates if rules.reorders else 0,
                    ranker.candidates if ranker else 0, blend.candidates if blend else 0,
                    rules.new_item_within if rules.new_item_slot >= 0 and live.size else 0)
        batched = rules.active and batched_mmr(rules)
        per_list = replace(rules, mmr_lambda=1.0) if batched else rules
        return Plan(c, ranker, blend, width, batched, per_list)

    def run(self, bundle: ModelBundle, batch: Batch) -> list[Ranked]:
        """The lists of ``batch``'s users, in order."""
        if batch.live.version != bundle.version:  # built for another bundle: another space
            batch = replace(batch, live=EMPTY)
        plan = self.plan(bundle, batch.live)
        users = prepare(bundle, batch, plan.rules)
        lists: list[Ranked | None] = [None] * len(batch.histories)
        if users.modelled:
            slate = candidates_stage(bundle, batch, users, plan)
            slate = blend_stage(slate, plan.blend)
            slate = rank_stage(bundle, batch.live, slate, plan.ranker)
            for u, ranked in zip(users.modelled, rerank_stage(bundle, batch, slate, plan),
                                 strict=True):
                lists[u] = ranked
        return fill_stage(bundle, batch, users, lists, plan)

    def describe(self, bundle: ModelBundle) -> str:
        """The stages this funnel runs for ``bundle``, in one line (the worker's log)."""
        c = self.config
        ranker = bundle.ranker
        if ranker is None:
            rank = "ranker: none in the bundle"
        else:
            state = "on" if chosen(ranker, c.ranking) is not None else "off"
            rank = (f"ranker: {state} (STREAMREC_RANKER={c.ranking}; the bundle's default: "
                    f"{'on' if ranker.enabled else 'off'}), reorders the first {ranker.candidates}")
        blend = bundle.blend
        if blend is None:
            mix = "content blend: none in the bundle"
        else:
            runs = self.reorder_stages(bundle)[1] is not None
            mix = (f"content blend: {'on' if runs else 'off'} (STREAMREC_CONTENT_BLEND={c.blending}; "
                   f"the bundle's default: {'on' if blend.enabled else 'off'}; beta {blend.beta:.4g}; "
                   f"not where the ranker runs), re-scores the first {blend.candidates}")
        return (f"funnel for {bundle.version}: retrieval of {c.candidates} candidates where a "
                f"stage reorders; {mix}; {rank}; re-ranking: {c.rules.describe()}")


def prepare(bundle: ModelBundle, batch: Batch, rules: RerankConfig) -> Users:
    """Histories as item indexes; withdrawn and blocklisted items count as seen. With the
    users' ids and event counts and a bundle with a step encoder, each user's session is
    encoded by its new items only (:meth:`StepEncoder.sessions`)."""
    vocab, live = bundle.vocab, batch.live
    excluded = live.blocked
    if rules.blocklist:
        excluded = excluded | {i for x in rules.blocklist if (i := vocab.index(x)) is not None}
    seen: list[AbstractSet[int]]
    if bundle.step is not None and batch.users is not None and batch.counts is not None:
        pairs = bundle.step.sessions(batch.users, batch.histories, batch.counts, live.proxies,
                                     partial(encode_history, bundle, live))
        encoded = [e for e, _ in pairs]
        seen = [s | excluded if excluded else s for _, s in pairs]
        return Users(encoded, seen, [u for u, e in enumerate(encoded) if e])
    encoded = [vocab.encode(h) for h in batch.histories]
    seen = [set(e) | excluded if excluded else set(e) for e in encoded]
    if live.proxies:  # new items in a history: the encoder reads their nearest bundle item
        encoded = [encode_history(bundle, live, h) for h in batch.histories]
    return Users(encoded, seen, [u for u, e in enumerate(encoded) if e])


def encode_history(bundle: ModelBundle, live: CatalogueView, history: Sequence[str]) -> list[int]:
    """Item indexes the encoder reads for ``history``: new items as their proxies, items
    neither the bundle nor the live catalogue knows left out."""
    if not live.proxies:
        return bundle.vocab.encode(history)
    index, proxy = bundle.vocab.index, live.proxies.get
    return [x for i in history if (x := index(i) or proxy(i))]


def windows(bundle: ModelBundle, batch: Batch, users: Users) -> list[Sequence[int]]:
    """The modelled users' encoded windows (:class:`~streamrec.sequences.Window`). An
    anchored window starts at an event of the whole sequence (``batch.counts``), so items
    the bundle does not know are dropped after the window is placed, not before."""
    window = bundle.window
    if not window.anchored:
        return [window.cut(users.encoded[u]) for u in users.modelled]
    out: list[Sequence[int]] = []
    for u in users.modelled:
        h = batch.histories[u]
        n = len(h) if batch.counts is None else max(batch.counts[u], len(h))
        start = max(0, window.start(n) - (n - len(h)))
        encoded = users.encoded[u]
        if start == 0 and len(encoded) <= window.max_len:
            out.append(encoded)
        elif len(encoded) == len(h):  # every item known: the same cut of the encoded history
            out.append(window.cut(encoded[start:]))
        else:
            out.append(window.cut(encode_history(bundle, batch.live, h[start:])))
    return out


def candidates_stage(bundle: ModelBundle, batch: Batch, users: Users, plan: Plan) -> Slate:
    """Stage 1: one encode and one index search for the modelled users' ``plan.width``
    unseen items, merged by score with the live catalogue's new items (blocked ones
    excluded), and each user's best new item for the slot."""
    rows = users.modelled
    histories = [users.encoded[u] for u in rows]
    read = windows(bundle, batch, users)
    if bundle.step is not None and batch.users is not None:
        vecs = bundle.step.encode([batch.users[u] for u in rows], read)
    else:
        vecs = bundle.encoder.encode(pad_batch(read, bundle.max_len))
    keys, scores = bundle.index.top_k_unseen(vecs, plan.width, [users.seen[u] for u in rows])
    best_new: list[Candidate | None] = [None] * len(rows)
    live, rules = batch.live, plan.rules
    if live.size:
        keys, scores, best_new = with_new_items(
            keys, scores, vecs, live, [batch.histories[u] for u in rows], plan.width,
            rules.blocklist, rules.new_item_within, new_item_chooser(bundle, live, rules),
            merge=not rules.new_item_slot_only)
    return Slate(keys, scores, vecs, best_new, histories)


def blend_stage(slate: Slate, blend: ContentBlend | None) -> Slate:
    """Stage 2: the first candidates re-scored with their attribute overlap (the content
    blend, :mod:`serving.content_blend`), where it runs."""
    if blend is None:
        return slate
    keys, scores = blend.apply(slate.keys, slate.scores, slate.histories)
    return replace(slate, keys=keys, scores=scores)


def rank_stage(bundle: ModelBundle, live: CatalogueView, slate: Slate, ranker: Ranker | None) -> Slate:
    """Stage 3: the first candidates re-scored by the bundle's ranker, where it runs."""
    if ranker is None:
        return slate
    keys, scores = rank_rows(bundle, live, slate.vecs, slate.keys, slate.scores, slate.histories)
    return replace(slate, keys=keys, scores=scores)


def rerank_stage(bundle: ModelBundle, batch: Batch, slate: Slate, plan: Plan) -> list[Ranked]:
    """Stage 4: the re-ranking rules (:mod:`serving.rerank`): MMR over vectors for the
    whole batch where nothing before it needs a list of its own, then each list's rules
    (caps, pins, freshness, the new-item slot), and the ids decoded."""
    live, rules, top_n = batch.live, plan.rules, plan.config.top_n
    keys, scores = slate.keys, slate.scores
    if plan.batched:  # caps and pins still run per list, below
        keys, scores = mmr_batch(bundle, live, keys, scores, rules.mmr_lambda, top_n)
    if not rules.reorders or (plan.batched and not rules.max_per_value):
        keys, scores = keys[:, :top_n], scores[:, :top_n]  # nothing left needs more
    rerank_of = list_reranker(bundle, live, plan.per_list, batch.now_ms) if rules.active else None
    # blocked items never reached the candidates: with nothing but pins left per list,
    # the lists skip the Candidate objects
    pins_only = rerank_of is not None and plan.per_list.pins_only
    bundle_ids, live_ids = bundle.vocab.ids, live.ids
    out: list[Ranked] = []
    for row in range(len(keys)):
        ks = keys[row][keys[row] != PAD].tolist()
        ids = [bundle_ids[x - 1] if x > 0 else live_ids[-x - 1] for x in ks]
        sc = scores[row, :len(ks)].tolist()
        why = [REASON_SEQUENCE if x > 0 else REASON_NEW_ITEM for x in ks]
        if pins_only:
            ids, sc, why = pin_lists(ids, sc, why, rules.pins, top_n)
        elif rerank_of is not None:
            ids, sc, why = rerank_of([Candidate(i, s, r) for i, s, r in zip(ids, sc, why, strict=True)],
                                     top_n, slate.best_new[row])
        out.append(Ranked(ids, sc, SOURCE_MODEL, why))
    return out


def fill_stage(bundle: ModelBundle, batch: Batch, users: Users, lists: Sequence[Ranked | None],
         plan: Plan) -> list[Ranked]:
    """Stage 5: short lists topped up from popularity (tiny catalogues); users the model
    cannot encode get the fallback list (trending, then popular), with the rules that need
    no scores and no user vector."""
    return [_fallback(bundle, batch, u, plan) if r is None else _top_up(bundle, users.seen[u], r, plan)
            for u, r in enumerate(lists)]


def _top_up(bundle: ModelBundle, seen: AbstractSet[int], r: Ranked, plan: Plan) -> Ranked:
    top_n, blocklist = plan.config.top_n, plan.rules.blocklist
    if len(r.items) >= top_n:
        return r
    have = seen | set(bundle.vocab.encode(r.items))
    extra = [i for i in bundle.vocab.decode(popular_for(bundle, have, top_n))
             if i not in blocklist and i not in r.items][:top_n - len(r.items)]
    return Ranked(r.items + extra, r.scores + [float("nan")] * len(extra), r.source,
                  (r.reasons or []) + [REASON_POPULAR] * len(extra))


def _fallback(bundle: ModelBundle, batch: Batch, u: int, plan: Plan) -> Ranked:
    live, rules, top_n = batch.live, plan.rules, plan.config.top_n
    ids_of = bundle.vocab.ids
    popular = (ids_of[i - 1] for i in bundle.popular)  # decoded as far as needed
    banned = set(batch.histories[u]) | live.blocked_ids | rules.blocklist
    ids, from_trending = fallback_list(batch.trending, popular, banned, top_n)
    why = [REASON_TRENDING] * from_trending + [REASON_POPULAR] * (len(ids) - from_trending)
    sc = [float("nan")] * len(ids)
    # no scores to trade, no user vector to choose a new item by
    fallback_rules = replace(rules, mmr_lambda=1.0, freshness_boost=0.0, new_item_slot=-1)
    if fallback_rules.active:
        out = rerank([Candidate(i, s, w) for i, s, w in zip(ids, sc, why, strict=True)],
                     fallback_rules, top_n, values=capped_values(bundle, live, rules))
        ids, sc, why = [c.item for c in out], [c.score for c in out], [c.reason for c in out]
    return Ranked(ids, sc, SOURCE_TRENDING if from_trending else SOURCE_POPULAR, why)


def popular_for(bundle: ModelBundle, seen: AbstractSet[int], n: int) -> list[int]:
    return [i for i in bundle.popular if i not in seen][:n]


def recommend(bundle: ModelBundle, histories: Sequence[Sequence[str]], top_n: int = 20, *,
              trending: Sequence[str] = (), live: CatalogueView = EMPTY, now_ms: int | None = None,
              rules: RerankConfig = NO_RULES, candidates: int = 200,
              ranking: Mode = "auto", blending: Mode = "auto") -> list[Ranked]:
    """One batch through a funnel made for it: for callers that hold no :class:`Funnel`
    (offline evaluation, benchmarks, tests). The keywords after ``now_ms`` are the
    :class:`FunnelConfig`'s."""
    config = FunnelConfig(top_n, candidates, rules, ranking, blending)
    return Funnel(config).run(bundle, Batch(histories, trending, live, now_ms))
