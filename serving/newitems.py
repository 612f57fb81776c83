"""Which new item the new-item slot shows a user, and whether it shows one.

The slot (:func:`serving.rerank.slot_new_item`) gives each list one place for
a new item (cold start). By default the item is the user's best by vector
score (the item tower or content map places new items in the model's space).
With a **content weight** ``w`` > 0 the choice also counts how much the item's
attributes overlap the user's recent items' attributes, the signal attribute
k-NN ranks by:

    key(u, j) = (v_u · v_j) / |v_u|  +  w · overlap(u, j)
    overlap(u, j) = Σ_h d(h) · |attrs(h) ∩ attrs(j)| / (Σ_h d(h) · sqrt(|attrs(j)|))

over the user's last :data:`CONTENT_WINDOW` items ``h``, newest weighted 1 and
each step back by :data:`CONTENT_DECAY`. Dividing by ``|v_u|`` puts the vector
part on the same scale for every user, so one **minimum key** can gate the
slot: only users whose chosen item reaches it get one (fewer warm lists lose
their tenth item). The worker (``serving.recommend``) and the offline
cold-start protocol (``training.cold.slot_ranks``) both compute the key here.
The decay and window were chosen on Beauty's validation items, never its test
split (docs/BENCHMARKS.md, "Choosing the new item by content").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Columns = Sequence[int] | np.ndarray  # one item's attribute columns

CONTENT_DECAY = 0.6  # weight of the item one step before a more recent one
CONTENT_WINDOW = 20  # the user's items that count (0.6 ** 20 ~ 4e-5: the rest would not)
_DECAYS = [CONTENT_DECAY ** age for age in range(CONTENT_WINDOW)]
_TOTALS = [sum(_DECAYS[:n]) for n in range(CONTENT_WINDOW + 1)]  # by how many items count


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


def item_columns(items: Sequence[Columns], width: int) -> np.ndarray:
    """[n, width] float32: each item's attribute columns one-hot, divided by the square root
    of how many it has (an item with many attributes does not win by size)."""
    out = np.zeros((len(items), width), dtype=np.float32)
    for r, cols in enumerate(items):
        if len(cols):
            uniq = np.unique(np.asarray(cols, dtype=np.int64))
            out[r, uniq] = np.float32(1.0) / np.sqrt(np.float32(len(uniq)))  # in float32 throughout
    return out


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
