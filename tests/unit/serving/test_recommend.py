"""Unit tests of the whole funnel (:func:`serving.funnel.recommend`) and its array steps
(:mod:`serving.slate`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from serving.bundle import load_bundle
from serving.funnel import Funnel, FunnelConfig, recommend
from serving.list_types import SOURCE_MODEL, SOURCE_POPULAR
from serving.rerank import RerankConfig


def test_dense_and_faiss_paths_agree_and_skip_seen(tiny_bundle_dir: Path) -> None:
    import faiss

    from serving.index import ItemIndex

    b = load_bundle(tiny_bundle_dir)
    dense = b.index
    hnsw = faiss.IndexHNSWFlat(dense.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 1000  # exhaustive on 120 items
    hnsw.add(dense.vectors())
    approx = ItemIndex(hnsw)
    vecs = dense.vectors()[:6] * 3
    seen = [{1, 2, 3}, set(), {5}, set(range(1, 100)), {7, 8}, set(range(1, 121))]
    i1, s1 = dense.top_k_unseen(vecs, 10, seen)
    i2, _ = approx.top_k_unseen(vecs, 10, seen)
    assert np.array_equal(i1, i2)
    for row, s in enumerate(seen):
        assert not set(i1[row].tolist()) & s
    assert (i1[5] == 0).all() and np.isneginf(s1[5]).all()  # everything seen: PAD
    assert (i1[3] != 0).sum() == 10 and (i1[3] > 99).all()


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



def test_no_usable_history_gets_trending_then_popular(tiny_bundle_dir: Path) -> None:
    b = load_bundle(tiny_bundle_dir)
    popular = b.vocab.decode(list(b.popular[:5]))
    trending = ["new-item", popular[0]]
    r_seen, r_new, r_modelled = recommend(
        b, [["x-unknown", "new-item"], [], [popular[1]]], 5, trending=trending)
    assert r_new.source == "trending" and r_new.items[:2] == trending
    assert r_new.items[2:] == [p for p in popular if p not in trending][:3]
    assert "new-item" not in r_seen.items and r_seen.source == "trending"  # seen: left out
    assert r_modelled.source == "model"  # trending is only the fallback
    r_none = recommend(b, [[]], 5, trending=[])[0]
    assert r_none.source == "popular" and r_none.items == popular


def test_every_item_has_a_reason_and_rules_apply_to_every_list(tiny_bundle_dir: Path) -> None:
    from serving.rerank import RerankConfig

    b = load_bundle(tiny_bundle_dir)
    histories = [list(b.vocab.ids[:3]), [], ["unknown"]]
    plain = recommend(b, histories, 5, trending=["t1"])
    assert plain[0].reasons == ["sequence"] * 5
    assert plain[1].reasons == ["trending"] + ["popular"] * 4
    banned = {plain[0].items[0], plain[1].items[1]}
    rules = RerankConfig(blocklist=frozenset(banned), pins={0: "promo"}, mmr_lambda=0.5)
    out = recommend(b, histories, 5, trending=["t1"], rules=rules, candidates=50)
    for r in out:
        assert not banned & set(r.items) and r.items[0] == "promo" and len(r.items) == 5
        assert r.reasons is not None and r.reasons[0] == "pinned" and len(r.reasons) == 5
    assert out[0].source == "model" and set(out[0].reasons[1:]) <= {"sequence", "popular"}


@pytest.mark.parametrize("caps", [2, 0])
def test_mmr_for_the_whole_batch_writes_the_lists_the_per_list_path_writes(
        tiny_tower_bundle: Path, monkeypatch: pytest.MonkeyPatch, caps: int) -> None:
    from serving import funnel
    from serving.catalogue import Catalogue
    from serving.rerank import RerankConfig
    from serving.slate import item_vectors
    from streamrec.items import ItemRecord

    b = load_bundle(tiny_tower_bundle)
    cat = Catalogue()  # two new items, so the batch mixes bundle and live vectors
    tokens = list(next(iter(b.attributes.values())))
    live = cat.apply([ItemRecord(f"new-{n}", 1_000 + n, tokens) for n in range(2)], b)
    assert live.size == 2
    histories = [list(b.vocab.ids[i:i + 6]) for i in range(0, 60, 4)]
    rules = RerankConfig(mmr_lambda=0.5, max_per_value=caps, pins={3: b.vocab.ids[-1]})
    batched = funnel.recommend(b, histories, 10, live=live, rules=rules)
    monkeypatch.setattr(funnel, "batched_mmr", lambda r: False)
    per_list = funnel.recommend(b, histories, 10, live=live, rules=rules)
    assert [r.items for r in batched] == [r.items for r in per_list]
    assert [r.reasons for r in batched] == [r.reasons for r in per_list]
    # the batch's vectors: bundle items by index, new items by their catalogue row, padding 0
    got = item_vectors(b, live, np.array([[1, -2, 0]]))
    assert b.index.dense is not None
    np.testing.assert_array_equal(got[0], np.stack([b.index.dense[0], live.vecs[1],
                                                    np.zeros_like(live.vecs[1])]))


def test_the_funnel_says_which_stages_run(tiny_bundle_dir: Path, tiny_ranker_bundle: Path) -> None:
    plain = load_bundle(tiny_bundle_dir)
    def describe_funnel(bundle: object, ranking: str, rules: RerankConfig, candidates: int) -> str:
        config = FunnelConfig(candidates=candidates, rules=rules, ranking=ranking)  # type: ignore[arg-type]
        return Funnel(config).describe(bundle)  # type: ignore[arg-type]

    assert "ranker: none in the bundle" in describe_funnel(plain, "on", RerankConfig(), 200)
    ranked = load_bundle(tiny_ranker_bundle)
    assert ranked.ranker is not None
    on = describe_funnel(ranked, "on", RerankConfig(mmr_lambda=0.5), 200)
    assert "ranker: on (STREAMREC_RANKER=on" in on and "re-ranking: MMR λ 0.5 (vectors)" in on
    assert "ranker: off (STREAMREC_RANKER=off" in describe_funnel(ranked, "off", RerankConfig(), 200)
    assert describe_funnel(ranked, "off", RerankConfig(), 200).endswith("re-ranking: none")


@pytest.mark.parametrize("mmr", [1.0, 0.5])
def test_pins_without_candidate_objects_write_what_the_per_list_rules_write(
        tiny_bundle_dir: Path, mmr: float) -> None:
    """With nothing but pins (and the blocklist) left per list, ``recommend`` pins the
    columns directly (``pin_lists``); a slot with no new item to place sends the same lists
    through the general per-list ``rerank``: they must be the same lists."""
    b = load_bundle(tiny_bundle_dir)
    histories = [list(b.vocab.ids[i:i + 4]) for i in range(0, 40, 4)]
    plain = recommend(b, histories, 6)
    rules = RerankConfig(blocklist=frozenset({plain[0].items[1]}), mmr_lambda=mmr,
                         pins={0: "promo", 3: plain[1].items[4], 9: "late"})
    assert rules.pins_only == (mmr == 1.0) and replace(rules, mmr_lambda=1.0).pins_only
    fast = recommend(b, histories, 6, rules=rules, candidates=30)
    general = recommend(b, histories, 6, rules=replace(rules, new_item_slot=2), candidates=30)
    assert [(r.items, r.reasons) for r in fast] == [(r.items, r.reasons) for r in general]
    for f, g in zip(fast, general, strict=True):
        np.testing.assert_array_equal(f.scores, g.scores)  # NaN (pinned) where NaN
    assert all(r.items[0] == "promo" and r.items[3] == plain[1].items[4] for r in fast)
    assert fast[1].reasons is not None and fast[1].reasons.count("pinned") == 2
