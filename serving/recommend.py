"""The pure recommendation step: sequences in, filtered ranked lists out.

``recommend`` is what a worker runs for every micro-batch, in a thread off the
event loop: one ONNX call for all users, one FAISS search, then per-user
filtering of seen items. Users with no item the model knows get the bundle's
popularity list instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serving.bundle import ModelBundle
from serving.vocab import PAD

SOURCE_MODEL = "model"
SOURCE_POPULAR = "popular"


@dataclass(frozen=True, slots=True)
class Ranked:
    """One user's final list: external item ids, their scores, and where it came from."""

    items: list[str]
    scores: list[float]
    source: str


def left_pad(seqs: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """[B, max_len] int64, each row the last ``max_len`` items right-aligned, PAD on the left."""
    out = np.full((len(seqs), max_len), PAD, dtype=np.int64)
    for row, seq in zip(out, seqs, strict=True):
        tail = seq[-max_len:]
        if tail:
            row[max_len - len(tail):] = tail
    return out


def pad_batch(seqs: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Left-padded to the batch's longest sequence, at most ``max_len``.

    The encoder accepts any width up to max_len (positions count from the end),
    so leading columns of pure padding are never computed.
    """
    return left_pad(seqs, max(1, min(max_len, max((len(s) for s in seqs), default=1))))


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
