"""Which new item the new-item slot shows a user, and whether it shows one.

The slot (:func:`serving.rerank.slot_new_item`) gives each list one place for
a new item (cold start). By default the item is the user's best by vector
score (the item tower or content map places new items in the model's space).
With a **content weight** ``w`` > 0 the choice also counts how much the item's
attributes overlap the user's recent items' attributes, the signal attribute
k-NN ranks by:

    key(u, j) = (v_u · v_j) / |v_u|  +  w · overlap(u, j)
    overlap(u, j) = Σ_h d(h) · Σ_{a ∈ attrs(h) ∩ attrs(j)} idf(a)^p / (Σ_h d(h) · sqrt(|attrs(j)|))
    idf(a) = log((1 + n) / (1 + df(a)))

over the user's last :data:`CONTENT_WINDOW` items ``h``, newest weighted 1 and
each step back by :data:`CONTENT_DECAY`; ``df(a)`` counts the items of the
served bundle's catalogue (``n`` items with attributes) that have attribute ``a``,
so a shared rare attribute (a small brand) counts far more than a shared
common one (a top-level category), and one every item has counts nothing.
``p`` (:data:`IDF_POWER`) is 3: TF-IDF's inner product would be 2 (idf on the
user's side and the item's); 3, sharper still, did better on Beauty's tuning
split. Dividing by ``|v_u|`` puts the vector
part on the same scale for every user, so one **minimum key** can gate the
slot: only users whose chosen item reaches it get one (fewer warm lists lose
their tenth item). The worker (``serving.funnel``) and the offline
cold-start protocol (``training.evaluation.cold_start.slot_ranks``) both compute the key here.
The decay and window were chosen on Beauty's validation items, never its test
split; the rarity weight on Beauty's tuning split over three cold-item seeds
(docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Columns = Sequence[int] | np.ndarray  # one item's attribute columns

CONTENT_DECAY = 0.6  # weight of the item one step before a more recent one
CONTENT_WINDOW = 20  # the user's items that count (0.6 ** 20 ~ 4e-5: the rest would not)
_DECAYS = [CONTENT_DECAY ** age for age in range(CONTENT_WINDOW)]
_TOTALS = [sum(_DECAYS[:n]) for n in range(CONTENT_WINDOW + 1)]  # by how many items count
IDF_POWER = 3  # the rarity weight's sharpness (module docstring; 2 would be TF-IDF's)


def content_profiles(histories: Sequence[Sequence[Columns]], width: int) -> np.ndarray:
    """[B, width] float32: each user's attribute profile. ``histories[u]`` lists the user's
    items oldest first, each as its attribute columns (< ``width``; an item with none still
    counts in the weights); the last :data:`CONTENT_WINDOW` count, the newest with weight
    1, and the profile is their weighted one-hot mean."""
    at: list[int] = []  # flat [B * width] positions and their weights, summed by bincount
    weights: list[float] = []
    for r, h in enumerate(histories):
        recent = h[-CONTENT_WINDOW:]
        if not len(recent):
            continue
        base, share = r * width, 1.0 / _TOTALS[len(recent)]
        for age, cols in enumerate(reversed(recent)):
            if len(cols):
                w = _DECAYS[age] * share
                for c in set(cols.tolist() if isinstance(cols, np.ndarray) else cols):
                    at.append(base + c)
                    weights.append(w)
    size = len(histories) * width
    summed = np.bincount(np.asarray(at, dtype=np.int64), weights=weights, minlength=size)
    return summed.astype(np.float32).reshape(len(histories), width)


def item_columns(items: Sequence[Columns], width: int, weights: np.ndarray | None = None,
                 ) -> np.ndarray:
    """[n, width] float32: each item's attribute columns one-hot, divided by the square root
    of how many it has (an item with many attributes does not win by size); with
    ``weights`` [width], each column times its weight (:func:`rarity_weights`)."""
    out = np.zeros((len(items), width), dtype=np.float32)
    for r, cols in enumerate(items):
        if len(cols):
            uniq = np.unique(np.asarray(cols, dtype=np.int64))
            out[r, uniq] = np.float32(1.0) / np.sqrt(np.float32(len(uniq)))  # in float32 throughout
    if weights is not None:
        out *= np.asarray(weights, dtype=np.float32)[None, :]
    return out


def rarity_weights(df: np.ndarray, catalogue: int) -> np.ndarray:
    """[width] float32: each attribute column's weight in the overlap, ``idf ** IDF_POWER``
    with ``idf = log((1 + catalogue) / (1 + df))``: ``df`` [width] counts the catalogue's
    items that have the attribute (0 for one only new items have: the rarest), ``catalogue``
    how many items with attributes it holds. An empty catalogue (a bundle without
    attributes) says nothing of rarity: every weight is 1."""
    if catalogue <= 0:
        return np.ones(len(df), dtype=np.float32)
    idf = np.log((1.0 + catalogue) / (1.0 + np.asarray(df, dtype=np.float64)))
    return (np.maximum(idf, 0.0) ** IDF_POWER).astype(np.float32)


def catalogue_rarity(items: Sequence[Columns], width: int) -> np.ndarray:
    """[width] :func:`rarity_weights` of a catalogue given as its items' attribute columns:
    the items with none neither count nor dilute."""
    known = [c for c in items if len(c)]
    return rarity_weights(attribute_df(known, width), len(known))


def attribute_df(items: Sequence[Columns], width: int) -> np.ndarray:
    """[width] int64: how many of ``items`` (each its attribute columns) have each column."""
    df = np.zeros(width, dtype=np.int64)
    for cols in items:
        if len(cols):
            df[np.unique(np.asarray(cols, dtype=np.int64))] += 1
    return df


def new_item_keys(scores: np.ndarray, user_vecs: np.ndarray, weight: float = 0.0,
                  profiles: np.ndarray | None = None, items: np.ndarray | None = None) -> np.ndarray:
    """[B, n] the slot's key of each new item (module docstring): ``scores`` [B, n] are the
    inner products (-inf where an item may not be shown), ``user_vecs`` [B, D]; with
    ``weight`` > 0, ``profiles`` [B, A] and ``items`` [n, A] give the overlap."""
    norms = np.maximum(np.linalg.norm(user_vecs, axis=1), 1e-12).astype(np.float32)
    keys: np.ndarray = scores / norms[:, None]
    if weight > 0:
        if profiles is None or items is None:
            raise ValueError("a content weight needs the users' profiles and the items' columns")
        keys = keys + weight * (profiles @ items.T)
    return keys
