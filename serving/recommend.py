"""The pure recommendation step: sequences in, filtered ranked lists out.

``recommend`` is what a worker runs for every micro-batch, in a thread off the
event loop: one ONNX call for all users, one FAISS search, then per-user
filtering of seen items. Users with no item the model knows get the bundle's
popularity list instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from serving.bundle import ModelBundle
from serving.lists import SOURCE_MODEL, SOURCE_POPULAR, Ranked
from streamrec.sequences import PAD, pad_batch


def popular_for(bundle: ModelBundle, seen: set[int], n: int) -> list[int]:
    return [i for i in bundle.popular if i not in seen][:n]


def recommend(bundle: ModelBundle, histories: Sequence[Sequence[str]], top_n: int) -> list[Ranked]:
    """Top-``top_n`` unseen items for each history (external ids, oldest first)."""
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
    for u, r in enumerate(results):
        if r is None:
            idx = popular_for(bundle, seen[u], top_n)
            results[u] = Ranked(vocab.decode(idx), [float("nan")] * len(idx), SOURCE_POPULAR)
    return results  # type: ignore[return-value]
