"""The pure recommendation step: sequences in, filtered ranked lists out.

``recommend`` is what a worker runs for every micro-batch, in a thread off the
event loop: one ONNX call for all users, one FAISS search, then per-user
filtering of seen items. Users with no item the model knows get the fallback
list instead: the trending items (``serving.trending``) topped up from the
bundle's popularity list.
"""

from __future__ import annotations

from collections.abc import Sequence

from serving.bundle import ModelBundle
from serving.lists import SOURCE_MODEL, SOURCE_POPULAR, SOURCE_TRENDING, Ranked
from serving.trending import fallback_list
from streamrec.sequences import PAD, pad_batch


def popular_for(bundle: ModelBundle, seen: set[int], n: int) -> list[int]:
    return [i for i in bundle.popular if i not in seen][:n]


def recommend(bundle: ModelBundle, histories: Sequence[Sequence[str]], top_n: int,
              trending: Sequence[str] = ()) -> list[Ranked]:
    """Top-``top_n`` unseen items for each history (external ids, oldest first);
    ``trending``: the current trending item ids, for histories the model cannot use."""
    vocab = bundle.vocab
    encoded = [vocab.encode(h) for h in histories]
    seen = [set(e) for e in encoded]
    modelled = [u for u, e in enumerate(encoded) if e]
    results: list[Ranked | None] = [None] * len(histories)
    if modelled:
        seqs = pad_batch([encoded[u] for u in modelled], bundle.max_len)
        vecs = bundle.encoder.encode(seqs)
        items, scores = bundle.index.top_k_unseen(vecs, top_n, [seen[u] for u in modelled])
        for row, u in enumerate(modelled):
            real = items[row] != PAD
            idx, sc = items[row][real].tolist(), scores[row][real].tolist()
            if len(idx) < top_n:  # tiny catalogues: top up from popularity
                extra = popular_for(bundle, seen[u] | set(idx), top_n - len(idx))
                idx, sc = idx + extra, sc + [float("nan")] * len(extra)
            results[u] = Ranked(vocab.decode(idx), sc, SOURCE_MODEL)
    ids_of = vocab.ids
    for u, r in enumerate(results):
        if r is None:
            popular = (ids_of[i - 1] for i in bundle.popular)  # decoded as far as needed
            ids, from_trending = fallback_list(trending, popular, set(histories[u]), top_n)
            results[u] = Ranked(ids, [float("nan")] * len(ids),
                                SOURCE_TRENDING if from_trending else SOURCE_POPULAR)
    return results  # type: ignore[return-value]
