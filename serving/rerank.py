"""Re-ranking: pure functions from ranked candidates to the final list, each item with a reason.

The last stage of the funnel (retrieval -> ranking -> re-ranking). Every step
takes and returns a list of :class:`Candidate` (best first) and is configured
per deployment (:class:`RerankConfig`). The order of application
(:func:`rerank`):

1. **blocklist**: listed items never reach a list;
2. **freshness**: ``score += boost * 2 ** (-age / half_life)`` for items with a
   known catalogue age; a candidate whose boost moves it up is marked ``fresh``;
3. **maximal marginal relevance** (λ): greedily pick the candidate maximising
   ``λ · relevance − (1 − λ) · max similarity to the items already picked``,
   with similarity from item vectors (cosine) or attributes (Jaccard); λ = 1
   keeps the order;
4. **the new-item slot**: where none of the first ``P + 1`` items is a new item
   (one added through the items topic since the bundle was trained), the user's
   best-scoring new item moves to position ``P`` (marked ``content``), the items
   from there down shifting one place: each new item gets exposure in the
   lists it fits best, before it has any clicks (cold start);
5. **caps**: at most ``M`` items per attribute value (e.g. per brand) in the
   top ``N``; the excess moves below position ``N``, in order;
6. **pins**: fixed items at fixed positions (marked ``pinned``), the rest
   shifting down.

Relevance for MMR is the score min-max scaled over the candidates, so λ means
the same whatever the score's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from streamrec.errors import ConfigError
from streamrec.settings import Settings

REASON_SEQUENCE = "sequence"  # retrieved for the user's sequence (the model's vector)
REASON_NEW_ITEM = "new_item"  # a new item found through its attributes (the item tower)
REASON_TRENDING = "trending"  # the fallback: clicked a lot lately
REASON_POPULAR = "popular"  # the fallback: popular in the training data
REASON_FRESH = "fresh"  # moved up by the freshness boost
REASON_PINNED = "pinned"  # a business rule put it at this position
REASONS = (REASON_SEQUENCE, REASON_NEW_ITEM, REASON_TRENDING, REASON_POPULAR, REASON_FRESH,
           REASON_PINNED)


@dataclass(frozen=True, slots=True)
class Candidate:
    item: str
    score: float
    reason: str = REASON_SEQUENCE


@dataclass(frozen=True)
class RerankConfig:
    """What a deployment asks of its lists. The defaults change nothing."""

    blocklist: frozenset[str] = frozenset()
    mmr_lambda: float = 1.0  # 1 = relevance only
    mmr_similarity: str = "vectors"  # "vectors" (cosine of item vectors) or "attributes" (Jaccard)
    freshness_boost: float = 0.0  # added to the scaled relevance of a brand-new item
    freshness_half_life_s: float = 86_400.0
    max_per_value: int = 0  # 0 = no cap
    cap_attribute: str = ""  # attribute prefix that names the value, e.g. "brand:" ("" = any)
    cap_top: int = 20
    pins: Mapping[int, str] = field(default_factory=dict)  # 0-based position -> item
    new_item_slot: int = -1  # 0-based position for the user's best new item; -1 = off
    new_item_within: int = 0  # the slot only where that item ranks in the first this many; 0 = any
    # the choice of that item (serving.new_item_slot): weight of attribute overlap in its key, and
    # the key it must reach (-inf: any)
    new_item_content_weight: float = 0.0
    new_item_min_key: float = -math.inf
    # new items reach lists through the slot only (not also merged into retrieval by score)
    new_item_slot_only: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> RerankConfig:
        """The deployment's rules (``STREAMREC_RERANK_*``); a malformed pin is a ConfigError."""
        pins: dict[int, str] = {}
        for part in filter(None, (p.strip() for p in s.rerank_pins.split(","))):
            pos, sep, item = part.partition(":")
            if not sep or not pos.strip().isdigit() or not item.strip():
                raise ConfigError(f"STREAMREC_RERANK_PINS: {part!r} is not 'position:item' "
                                  "(0-based position)")
            pins[int(pos)] = item.strip()
        if s.rerank_new_item_slot_only and s.rerank_new_item_slot < 0:
            raise ConfigError("STREAMREC_RERANK_NEW_ITEM_SLOT_ONLY needs STREAMREC_RERANK_NEW_ITEM_SLOT "
                              "(a position >= 0): without the slot no new item would reach a list")
        if s.rerank_new_item_slot_only and s.rerank_new_item_within:
            raise ConfigError("STREAMREC_RERANK_NEW_ITEM_WITHIN gates by the new item's rank among the "
                              "merged candidates, which STREAMREC_RERANK_NEW_ITEM_SLOT_ONLY does not "
                              "merge: gate with STREAMREC_RERANK_NEW_ITEM_MIN_KEY instead")
        return cls(blocklist=frozenset(filter(None, (i.strip() for i in s.rerank_blocklist.split(",")))),
                   mmr_lambda=s.rerank_mmr_lambda, mmr_similarity=s.rerank_mmr_similarity,
                   freshness_boost=s.rerank_freshness_boost,
                   freshness_half_life_s=s.rerank_freshness_half_life_s,
                   max_per_value=s.rerank_max_per_value, cap_attribute=s.rerank_cap_attribute,
                   cap_top=s.rerank_cap_top, pins=pins, new_item_slot=s.rerank_new_item_slot,
                   new_item_within=s.rerank_new_item_within,
                   new_item_content_weight=s.rerank_new_item_content_weight,
                   new_item_min_key=(-math.inf if s.rerank_new_item_min_key is None
                                     else s.rerank_new_item_min_key),
                   new_item_slot_only=s.rerank_new_item_slot_only)

    @property
    def reorders(self) -> bool:
        """Whether a rule may bring up an item from below the top ``n`` (MMR, freshness,
        caps), so retrieval returns ``candidates`` items per user first."""
        return bool(self.mmr_lambda < 1.0 or self.freshness_boost or self.max_per_value)

    def describe(self) -> str:
        """The rules in one line, for the worker's log ("none" when nothing is on)."""
        parts = []
        if self.blocklist:
            parts.append(f"blocklist {len(self.blocklist)}")
        if self.freshness_boost:
            parts.append(f"freshness {self.freshness_boost:g} (half-life {self.freshness_half_life_s:g}s)")
        if self.mmr_lambda < 1.0:
            parts.append(f"MMR λ {self.mmr_lambda:g} ({self.mmr_similarity})")
        if self.new_item_slot >= 0:
            slot = f"new-item slot {self.new_item_slot}"
            if self.new_item_within:
                slot += f" within {self.new_item_within}"
            if self.new_item_content_weight > 0:
                slot += f", content weight {self.new_item_content_weight:g}"
            if self.new_item_min_key > -math.inf:
                slot += f", min key {self.new_item_min_key:g}"
            if self.new_item_slot_only:
                slot += ", new items in the slot only"
            parts.append(slot)
        if self.max_per_value:
            parts.append(f"at most {self.max_per_value} per {self.cap_attribute or 'attribute'}"
                         f" value in the top {self.cap_top}")
        if self.pins:
            parts.append(f"pins {len(self.pins)}")
        return ", ".join(parts) or "none"

    @property
    def pins_only(self) -> bool:
        """Nothing per list but pins (and the blocklist, which retrieval applies already)."""
        return not (self.freshness_boost or self.mmr_lambda < 1.0 or self.new_item_slot >= 0
                    or self.max_per_value)

    @property
    def active(self) -> bool:
        return bool(self.blocklist or self.mmr_lambda < 1.0 or self.freshness_boost
                    or self.max_per_value or self.pins or self.new_item_slot >= 0)


# items -> their similarities (one call per list; columns computed as MMR picks)
Similarity = Callable[[Sequence[str]], "Pairwise"]


def blocklisted(cands: Sequence[Candidate], blocklist: frozenset[str]) -> list[Candidate]:
    return [c for c in cands if c.item not in blocklist]


def scaled(cands: Sequence[Candidate]) -> list[float]:
    """Scores min-max scaled to [0, 1] (all equal -> 1); NaN scores count as the minimum."""
    raw = [c.score if math.isfinite(c.score) else -math.inf for c in cands]
    finite = [s for s in raw if math.isfinite(s)]
    if not finite:
        return [1.0] * len(cands)
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if span == 0:
        return [1.0 if math.isfinite(s) else 0.0 for s in raw]
    return [(max(s, lo) - lo) / span for s in raw]


def freshness(cands: Sequence[Candidate], age_s: Callable[[str], float | None], boost: float,
              half_life_s: float) -> list[Candidate]:
    """Scaled relevance plus ``boost * 2 ** (-age / half_life)``, re-sorted; items whose
    rank improved are marked ``fresh``. Items of unknown age get no boost."""
    if not boost or not cands:
        return list(cands)
    rel = scaled(cands)
    boosted = []
    for rank, (c, r) in enumerate(zip(cands, rel, strict=True)):
        age = age_s(c.item)
        bonus = 0.0 if age is None else boost * 2.0 ** (-max(age, 0.0) / half_life_s)
        boosted.append((r + bonus, -rank, rank, c))
    boosted.sort(key=lambda x: (x[0], x[1]), reverse=True)
    return [replace(c, score=s, reason=REASON_FRESH) if new < old and c.reason != REASON_PINNED
            else replace(c, score=s)
            for new, (s, _, old, c) in enumerate(boosted)]


def mmr(cands: Sequence[Candidate], lam: float, similarity: Similarity, k: int) -> list[Candidate]:
    """Maximal marginal relevance: the first ``k`` by λ·relevance − (1−λ)·max similarity to
    those picked before; then the rest in their order."""
    if lam >= 1.0 or len(cands) < 2:
        return list(cands)
    rel = np.asarray(scaled(cands), dtype=np.float64)
    sim = similarity([c.item for c in cands])
    n = len(cands)
    left = np.ones(n, dtype=bool)
    worst = np.zeros(n)  # max similarity to the picked ones, per candidate
    picked: list[int] = []
    for _ in range(min(k, n)):
        gain = np.where(left, lam * rel - (1 - lam) * worst, -np.inf)
        best = int(np.argmax(gain))  # ties: the earlier (more relevant) candidate
        picked.append(best)
        left[best] = False
        worst = np.maximum(worst, sim.column(best))
    return [cands[i] for i in picked] + [cands[int(i)] for i in np.flatnonzero(left)]


def scaled_rows(scores: np.ndarray) -> np.ndarray:
    """:func:`scaled` for every row of ``scores`` [B, K] at once (non-finite = the minimum)."""
    finite = np.isfinite(scores)
    lo = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (np.maximum(np.where(finite, scores, lo), lo) - lo) / np.where(span > 0, span, 1.0)
    flat = np.where(finite, 1.0, 0.0)  # a row whose finite scores are all equal
    out = np.where(np.isfinite(span) & (span > 0), rel, flat)
    return np.where(np.isfinite(lo), out, 1.0)  # no finite score at all: every item 1


def mmr_rows(scores: np.ndarray, unit: np.ndarray, valid: np.ndarray, lam: float, k: int,
             ) -> np.ndarray:
    """:func:`mmr` with cosine similarity for every list of a batch at once.

    ``scores`` [B, K] relevance in list order, ``unit`` [B, K, D] the candidates' unit
    vectors (zero rows: similarity 0), ``valid`` [B, K] real candidates (a prefix of each
    row). Returns [B, K] positions: each row's ``k`` picks, then its other candidates in
    order, then its padding. Same picks as :func:`mmr` over each row's valid prefix.
    """
    b, n = scores.shape
    rel = np.where(valid, scaled_rows(np.where(valid, scores, -np.inf)), 0.0)
    # λ·relevance of the candidates still left (-inf once picked, and for padding); the
    # loop works in place on preallocated rows: no [B, K] temporaries per pick
    base = np.where(valid, lam * rel, -np.inf)
    worst = np.zeros((b, n))  # max similarity to the picked ones, per candidate
    penalty, gain = np.empty((b, n)), np.empty((b, n))
    rows = np.arange(b)
    # picks first (in pick order), then the rest in their order (valid first, then padding)
    rank = np.broadcast_to(np.arange(n, 2 * n), (b, n)).copy()
    for j in range(min(k, n)):
        np.multiply(worst, 1 - lam, out=penalty)
        np.subtract(base, penalty, out=gain)
        best = gain.argmax(axis=1)  # ties: the earlier candidate
        has = np.isfinite(gain[rows, best])  # rows with a candidate left
        if not has.any():
            break
        rank[rows[has], best[has]] = j
        base[rows, best] = -np.inf
        # rows with nothing left update too: they pick nothing more
        np.maximum(worst, np.matmul(unit, unit[rows, best][:, :, None])[:, :, 0], out=worst)
    order: np.ndarray = np.argsort(rank, axis=1, kind="stable")
    return order


def cap_per_value(cands: Sequence[Candidate], values: Callable[[str], Sequence[str]], most: int,
                  top: int) -> list[Candidate]:
    """At most ``most`` items sharing any value (``values(item)``) in the first ``top``; the
    items over it move just below position ``top``, in their order."""
    if most <= 0:
        return list(cands)
    kept: list[Candidate] = []
    moved: list[Candidate] = []
    count: dict[str, int] = {}
    for c in cands:
        vs = values(c.item)
        if len(kept) < top and all(count.get(v, 0) < most for v in vs):
            kept.append(c)
            for v in vs:
                count[v] = count.get(v, 0) + 1
        elif len(kept) < top:
            moved.append(c)
        else:
            kept.append(c)
    return kept[:top] + moved + kept[top:]


def slot_new_item(cands: Sequence[Candidate], slot: int, best: Candidate | None,
                  is_new: Callable[[str], bool]) -> list[Candidate]:
    """Where none of the first ``slot + 1`` candidates is new (``is_new``), ``best`` (the
    user's best-scoring new item) moves to position ``slot``, marked ``content``; the
    candidates from there down shift one place (``best`` leaves its old place)."""
    if best is None or slot < 0 or any(is_new(c.item) for c in cands[:slot + 1]):
        return list(cands)
    rest = [c for c in cands if c.item != best.item]
    return [*rest[:slot], replace(best, reason=REASON_NEW_ITEM), *rest[slot:]]


def pin(cands: Sequence[Candidate], pins: Mapping[int, str], n: int) -> list[Candidate]:
    """Put each pinned item at its position (0-based), the others shifting down; a pinned
    item elsewhere in the list moves to its pin. Positions past the list's end append."""
    if not pins:
        return list(cands)
    items, scores, reasons = pin_lists([c.item for c in cands], [c.score for c in cands],
                                       [c.reason for c in cands], pins, n)
    return [Candidate(i, s, r) for i, s, r in zip(items, scores, reasons, strict=True)]


def pin_lists(items: Sequence[str], scores: Sequence[float], reasons: Sequence[str],
              pins: Mapping[int, str], n: int) -> tuple[list[str], list[float], list[str]]:
    """:func:`pin` over one list's parallel columns, and its first ``n`` (no pins: just
    those): the last step of a batch whose other rules ran on arrays, without a
    :class:`Candidate` per item."""
    if not pins:
        return list(items[:n]), list(scores[:n]), list(reasons[:n])
    pinned = set(pins.values())
    rest = iter([j for j, i in enumerate(items) if i not in pinned])
    out_i: list[str] = []
    out_s: list[float] = []
    out_r: list[str] = []
    for pos in range(n):
        if pos in pins:
            out_i.append(pins[pos])
            out_s.append(math.nan)
            out_r.append(REASON_PINNED)
        elif (j := next(rest, None)) is not None:
            out_i.append(items[j])
            out_s.append(scores[j])
            out_r.append(reasons[j])
    return out_i, out_s, out_r


def rerank(cands: Sequence[Candidate], cfg: RerankConfig, n: int, *,
           similarity: Similarity | None = None,
           values: Callable[[str], Sequence[str]] | None = None,
           age_s: Callable[[str], float | None] | None = None,
           new_item: Candidate | None = None,
           is_new: Callable[[str], bool] | None = None) -> list[Candidate]:
    """The final list of ``n`` from ranked ``cands`` under ``cfg`` (module docstring);
    ``new_item``: the user's best-scoring new item, for the new-item slot."""
    out = blocklisted(cands, cfg.blocklist) if cfg.blocklist else list(cands)
    if cfg.freshness_boost and age_s is not None:
        out = freshness(out, age_s, cfg.freshness_boost, cfg.freshness_half_life_s)
    if cfg.mmr_lambda < 1.0 and similarity is not None:
        out = mmr(out, cfg.mmr_lambda, similarity, n)
    if cfg.new_item_slot >= 0 and is_new is not None:
        out = slot_new_item(out, cfg.new_item_slot, new_item, is_new)
    if cfg.max_per_value and values is not None:
        out = cap_per_value(out, values, cfg.max_per_value, min(cfg.cap_top, n))
    return pin(out, cfg.pins, n) if cfg.pins else out[:n]


class Pairwise:
    """The similarities among one list's items, computed a column at a time: MMR reads only
    the columns of the items it picks (``k`` of them), not the whole ``n × n`` matrix.

    ``rows`` [n, m] item features; the similarity of items i and j is
    ``rows[i] · rows[j]`` (``kind="dot"``, unit vectors: cosine) or the Jaccard index of
    two 0/1 rows (``kind="jaccard"``).
    """

    def __init__(self, rows: np.ndarray, kind: str = "dot") -> None:
        self.rows = rows
        self.sizes = rows.sum(axis=1) if kind == "jaccard" else None  # None: dot products

    def column(self, j: int) -> np.ndarray:
        """[n] similarity of every item to item ``j``."""
        inter = self.rows @ self.rows[j]
        if self.sizes is None:
            return np.asarray(inter)
        union = self.sizes + self.sizes[j] - inter
        return np.asarray(np.where(union > 0, inter / np.maximum(union, 1), 0.0))

    def matrix(self) -> np.ndarray:
        return np.stack([self.column(j) for j in range(len(self.rows))], axis=1)


def cosine(vectors: Callable[[Sequence[str]], np.ndarray]) -> Similarity:
    """Cosine of the items' vectors (``vectors(items)`` -> [n, D]; zero rows for unknown
    items give similarity 0)."""
    def pairwise(items: Sequence[str]) -> Pairwise:
        m = np.asarray(vectors(items), dtype=np.float32)
        norms = np.linalg.norm(m, axis=1)
        return Pairwise(m / np.where(norms > 0, norms, 1.0)[:, None])
    return pairwise


def jaccard(attributes: Callable[[str], Sequence[str]]) -> Similarity:
    """Jaccard index of the items' attribute sets (``attributes(item)``)."""
    def pairwise(items: Sequence[str]) -> Pairwise:
        vocab: dict[str, int] = {}
        cols = [[vocab.setdefault(t, len(vocab)) for t in set(attributes(i))] for i in items]
        onehot = np.zeros((len(items), max(len(vocab), 1)), dtype=np.float32)
        for r, c in enumerate(cols):
            onehot[r, c] = 1.0
        return Pairwise(onehot, "jaccard")
    return pairwise
