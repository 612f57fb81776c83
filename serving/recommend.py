"""The pure recommendation step: sequences in, filtered ranked lists out.

``recommend`` is what a worker runs for every micro-batch, in a thread off the
event loop: one ONNX call for all users, one FAISS search, then per-user
filtering of seen items. Users with no item the model knows get the fallback
list instead: the trending items (``serving.trending``) topped up from the
bundle's popularity list.

With a live catalogue (``serving.catalogue``), items added since the bundle was
trained are scored against the same user vectors (one product with their
tower vectors) and merged into each list by score, and withdrawn items are
excluded like seen ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving.bundle import ModelBundle
from serving.catalogue import EMPTY, LiveItems
from serving.lists import SOURCE_MODEL, SOURCE_POPULAR, SOURCE_TRENDING, Ranked
from serving.topk import top_k_rows
from serving.trending import fallback_list
from streamrec.sequences import PAD, pad_batch


def popular_for(bundle: ModelBundle, seen: set[int], n: int) -> list[int]:
    return [i for i in bundle.popular if i not in seen][:n]


def recommend(bundle: ModelBundle, histories: Sequence[Sequence[str]], top_n: int,
              trending: Sequence[str] = (), live: LiveItems = EMPTY) -> list[Ranked]:
    """Top-``top_n`` unseen items for each history (external ids, oldest first);
    ``trending``: the current trending item ids, for histories the model cannot use;
    ``live``: the catalogue's additions and withdrawals for this bundle."""
    vocab = bundle.vocab
    if live.version != bundle.version:
        live = EMPTY  # built for another bundle: its vectors are in another space
    encoded = [vocab.encode(h) for h in histories]
    seen = [set(e) | live.blocked if live.blocked else set(e) for e in encoded]
    modelled = [u for u, e in enumerate(encoded) if e]
    results: list[Ranked | None] = [None] * len(histories)
    if modelled:
        seqs = pad_batch([encoded[u] for u in modelled], bundle.max_len)
        vecs = bundle.encoder.encode(seqs)
        items, scores = bundle.index.top_k_unseen(vecs, top_n, [seen[u] for u in modelled])
        new_idx, new_scores = _live_top(vecs, live, [histories[u] for u in modelled], top_n)
        for row, u in enumerate(modelled):
            real = items[row] != PAD
            ids, sc = vocab.decode(items[row][real].tolist()), scores[row][real].tolist()
            if new_idx is not None:
                ids, sc = _merge(ids, sc, live, new_idx[row], new_scores[row], top_n)
            if len(ids) < top_n:  # tiny catalogues: top up from popularity
                have = seen[u] | set(vocab.encode(ids))
                extra = vocab.decode(popular_for(bundle, have, top_n - len(ids)))
                ids, sc = ids + extra, sc + [float("nan")] * len(extra)
            results[u] = Ranked(ids, sc, SOURCE_MODEL)
    ids_of = vocab.ids
    for u, r in enumerate(results):
        if r is None:
            popular = (ids_of[i - 1] for i in bundle.popular)  # decoded as far as needed
            ids, from_trending = fallback_list(trending, popular,
                                               set(histories[u]) | live.blocked_ids, top_n)
            results[u] = Ranked(ids, [float("nan")] * len(ids),
                                SOURCE_TRENDING if from_trending else SOURCE_POPULAR)
    return results  # type: ignore[return-value]


def _live_top(vecs: np.ndarray, live: LiveItems, histories: Sequence[Sequence[str]],
              k: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Each user's best ``k`` new items (positions in ``live.ids``; -inf scores where fewer)."""
    if not live.size:
        return None, np.zeros(0)
    scores = vecs @ live.vecs.T  # (B, K)
    position = {i: p for p, i in enumerate(live.ids)}
    for row, h in enumerate(histories):
        for item in h:
            if (p := position.get(item)) is not None:
                scores[row, p] = -np.inf
    return top_k_rows(scores, min(k, live.size))


def _merge(ids: list[str], sc: list[float], live: LiveItems, new_idx: np.ndarray,
           new_sc: np.ndarray, k: int) -> tuple[list[str], list[float]]:
    """The best ``k`` of the bundle's list and the new items, by score (one space)."""
    pairs = list(zip(sc, ids, strict=True)) + [(float(s), live.ids[int(p)])
                                              for p, s in zip(new_idx, new_sc, strict=True)
                                              if np.isfinite(s)]
    pairs.sort(key=lambda x: -x[0])
    top = pairs[:k]
    return [i for _, i in top], [s for s, _ in top]
