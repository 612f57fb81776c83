"""The content blend: retrieval's candidates re-scored with their attribute overlap.

Where item attributes carry much of what a user does next (LastFM's tags), the
sequence model's score gains from adding attribute k-NN's, weighted by rarity:

    score'(u, j) = score(u, j) + beta · Σ_{h ∈ H(u)} Σ_{a ∈ attrs(h) ∩ attrs(j)} r(a) / sqrt(|attrs(j)|)

over the user's last ``max_len`` items ``H(u)`` (the items the encoder reads),
with ``r(a)`` the rarity weight the new-item slot's overlap uses
(:func:`serving.new_item_slot.rarity_weights`, over the bundle's items). The first
``candidates`` retrieved items are re-scored and re-sorted; those past them keep
retrieval's order below (:func:`serving.ranking.ranked_rows`); new items (from
the items topic) keep their retrieval score (the new-item slot shows them by
content). ``beta`` is chosen on the validation split by ``streamrec train``
with attributes (:mod:`training.models.blend`), which stores it in the manifest
(``metrics.content_blend``) with ``enabled`` true only where it beat retrieval
alone there; the worker and the offline report both order lists with
:meth:`ContentBlend.apply`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np

from serving.new_item_slot import catalogue_rarity
from serving.ranking import ranked_rows


@dataclass(frozen=True)
class ContentBlend:
    """``cols`` [N + 1, J] each item's attribute columns (0 pads; row = item index),
    ``weights`` [N + 1, J] each entry's rarity over the root of the item's count (0 on pads);
    ``width``: the columns; ``beta``: the blend's weight; ``candidates``: how many
    retrieved items it re-scores; ``enabled``: what training measured."""

    cols: np.ndarray
    weights: np.ndarray
    width: int
    beta: float
    candidates: int
    enabled: bool = True
    max_len: int = 50

    @classmethod
    def from_columns(cls, item_cols: Sequence[Sequence[int]], rarity: np.ndarray, beta: float,
                     candidates: int, enabled: bool = True, max_len: int = 50) -> ContentBlend:
        """From each item's attribute columns (row = item index, row 0 PAD) and the columns'
        rarity weights [width]."""
        j = max((len(set(c)) for c in item_cols), default=0)
        cols = np.zeros((len(item_cols), max(j, 1)), dtype=np.int64)
        weights = np.zeros(cols.shape, dtype=np.float32)
        for r, c in enumerate(item_cols):
            uniq = sorted({int(x) for x in c if int(x) > 0})  # 0 pads
            if uniq:
                cols[r, :len(uniq)] = uniq
                weights[r, :len(uniq)] = rarity[uniq] / np.sqrt(np.float32(len(uniq)))
        return cls(cols, weights, len(rarity), float(beta), int(candidates), enabled, max_len)

    @classmethod
    def of_catalogue(cls, columns: Mapping[str, int], items: Sequence[str],
                     attributes: Mapping[str, Sequence[str]], beta: float, candidates: int,
                     enabled: bool = True, max_len: int = 50) -> ContentBlend:
        """Over the catalogue ``items`` (item index r = ``items[r - 1]``), each with every
        token ``attributes`` gives it that ``columns`` (token -> column, 1-based) knows, the
        rarity counted over those items: what training fits and what a bundle loads."""
        cols: list[list[int]] = [[]]
        cols += [[columns[t] for t in attributes.get(i, ()) if t in columns] for i in items]
        rarity = catalogue_rarity(cols, len(columns) + 1)
        return cls.from_columns(cols, rarity, beta, candidates, enabled, max_len)

    @cached_property
    def _counts(self) -> np.ndarray:
        """[N + 1] how many attribute entries each item has (a prefix of its row)."""
        counts: np.ndarray = (self.cols > 0).sum(axis=1)
        return counts

    def _entries(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For flat ``items`` (indexes; 0 has none): each attribute entry's owner (position in
        ``items``), column and weight, without touching any item's padding."""
        n = self._counts[items]
        owner = np.repeat(np.arange(len(items)), n)
        offset = np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)
        flat = np.repeat(items * self.cols.shape[1], n) + offset
        return owner, self.cols.ravel()[flat], self.weights.ravel()[flat]

    def profiles(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, width] float32: how many of each user's last ``max_len`` items (indexes; 0 and
        unknown skipped) have each attribute column."""
        recent = [h[-self.max_len:] for h in histories]
        items = np.fromiter(chain.from_iterable(recent), dtype=np.int64)
        user = np.repeat(np.arange(len(recent)), [len(h) for h in recent])
        known = (items > 0) & (items < len(self.cols))
        items, user = items[known], user[known]
        owner, cols, _ = self._entries(items)
        size = len(histories) * self.width
        out = np.bincount(user[owner] * self.width + cols, minlength=size)
        return out.astype(np.float32).reshape(len(histories), self.width)

    def overlap(self, profiles: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """[B, K] the rarity-weighted overlap of each candidate (``keys``: item indexes; 0 or
        negative, a pad or a new item: 0) with its user's profile."""
        b, k = keys.shape
        items = np.where(keys > 0, keys, 0).ravel()
        owner, cols, w = self._entries(items)
        vals = profiles[owner // k, cols] * w
        got = np.bincount(owner, weights=vals, minlength=b * k)
        return got.astype(np.float32).reshape(b, k)

    def apply(self, keys: np.ndarray, scores: np.ndarray, histories: Sequence[Sequence[int]],
              ) -> tuple[np.ndarray, np.ndarray]:
        """Each user's first ``candidates`` candidates re-scored and re-sorted (``keys`` [B, W]
        item indexes, new items negative, pads 0 with -inf scores; rows sorted by score)."""
        width = min(keys.shape[1], self.candidates)
        if not width or not len(keys) or not self.beta:
            return keys, scores
        head = keys[:, :width]
        blended = scores[:, :width] + np.float32(self.beta) * self.overlap(self.profiles(histories), head)
        order, out = ranked_rows(blended.astype(scores.dtype), scores)
        return np.take_along_axis(keys, order, axis=1), out


def chosen_blend(blend: ContentBlend | None, mode: str) -> ContentBlend | None:
    """The blend to run under ``STREAMREC_CONTENT_BLEND`` ``mode``: ``on`` whenever the bundle
    has one, ``auto`` where training measured it better than retrieval alone, ``off`` never."""
    if blend is None or mode == "off" or (mode == "auto" and not blend.enabled):
        return None
    return blend
