from pathlib import Path

import numpy as np

from serving.bundle import load_bundle
from serving.recommend import SOURCE_MODEL, SOURCE_POPULAR, filter_seen, left_pad, recommend


def test_left_pad_keeps_last_items_right_aligned() -> None:
    out = left_pad([[1, 2, 3, 4], [5], []], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]
    assert out.dtype == np.int64


def test_filter_seen_keeps_order_and_drops_pad() -> None:
    items, scores = np.array([4, 0, 2, 7, 9]), np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert filter_seen(items, scores, {2}, 2) == ([4, 7], [0.9, 0.6])


def test_recommend_never_returns_seen_items(tiny_bundle_dir: Path) -> None:
    b = load_bundle(tiny_bundle_dir)
    vocab = b.vocab
    histories = [list(vocab.ids[i:i + 15]) for i in range(0, 60, 5)]
    for h, r in zip(histories, recommend(b, histories, top_n=20), strict=True):
        assert r.source == SOURCE_MODEL and len(r.items) == 20
        assert not set(r.items) & set(h)
        assert len(set(r.items)) == 20
        assert r.scores == sorted(r.scores, reverse=True)


def test_unknown_items_are_ignored_and_empty_history_gets_popular(tiny_bundle_dir: Path) -> None:
    b = load_bundle(tiny_bundle_dir)
    known = b.vocab.ids[0]
    r_unknown, r_mixed = recommend(b, [["nope", "never"], ["nope", known]], top_n=5)
    assert r_unknown.source == SOURCE_POPULAR
    assert r_unknown.items == b.vocab.decode(list(b.popular[:5]))
    assert r_mixed.source == SOURCE_MODEL and known not in r_mixed.items
    only = recommend(b, [[known]], top_n=5)[0]
    single = recommend(b, [["nope", known, "nope2"]], top_n=5)[0]
    assert only.items == single.items  # unknown items are not fed to the model
