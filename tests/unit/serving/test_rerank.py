"""Re-ranking on small hand-made lists (serving.rerank)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.rerank import (
    Candidate,
    RerankConfig,
    cap_per_value,
    cosine,
    freshness,
    jaccard,
    mmr,
    pin,
    rerank,
    scaled,
    slot_new_item,
)


def cands(*items: str) -> list[Candidate]:
    return [Candidate(i, float(len(items) - k)) for k, i in enumerate(items)]  # best first


def names(cs: list[Candidate]) -> list[str]:
    return [c.item for c in cs]


ATTRS = {"a1": ["brand:x", "cat:lip"], "a2": ["brand:x", "cat:lip"], "a3": ["brand:x", "cat:eye"],
         "b1": ["brand:y", "cat:lip"], "c1": ["brand:z", "cat:nail"]}


def test_defaults_change_nothing() -> None:
    cs = cands("a1", "a2", "b1")
    assert not RerankConfig().active
    assert rerank(cs, RerankConfig(), 3) == cs


def test_blocklisted_items_never_reach_the_list() -> None:
    out = rerank(cands("a1", "a2", "b1", "c1"), RerankConfig(blocklist=frozenset({"a2", "zz"})), 3)
    assert names(out) == ["a1", "b1", "c1"]


def test_mmr_lambda_trades_relevance_for_diversity() -> None:
    cs = cands("a1", "a2", "a3", "b1", "c1")
    sim = jaccard(lambda i: ATTRS.get(i, []))
    assert names(mmr(cs, 1.0, sim, 5)) == names(cs)  # λ = 1: relevance only
    diverse = names(mmr(cs, 0.3, sim, 5))
    assert diverse[0] == "a1"  # the most relevant always first
    assert diverse[1] == "c1"  # shares nothing with a1: beats the near-copies a2, a3
    assert diverse.index("a2") > diverse.index("b1")  # a2 is a1's twin: last resort
    assert sorted(diverse) == sorted(names(cs))


def test_mmr_with_vector_similarity() -> None:
    vecs = {"p": np.array([1.0, 0.0]), "q": np.array([0.99, 0.1]), "r": np.array([0.0, 1.0])}
    cs = [Candidate("p", 1.0), Candidate("q", 0.95), Candidate("r", 0.5)]
    def rows(items: list[str]) -> np.ndarray:
        return np.stack([vecs.get(i, np.zeros(2)) for i in items])

    assert names(mmr(cs, 0.5, cosine(rows), 3)) == ["p", "r", "q"]
    m = cosine(rows)(["p", "unknown", "p"]).matrix()
    assert m[0, 1] == 0.0 and m[0, 2] == pytest.approx(1.0)


def test_freshness_boosts_new_items_and_marks_them() -> None:
    cs = cands("old1", "old2", "new")
    ages = {"old1": 30 * 86_400.0, "old2": None, "new": 0.0}
    out = freshness(cs, ages.get, boost=1.5, half_life_s=86_400.0)
    assert names(out) == ["new", "old1", "old2"] and out[0].reason == "fresh"
    assert out[1].reason == "sequence"
    # a day old: half the boost; not enough to move up here
    ages["new"] = 86_400.0 * 3
    assert names(freshness(cs, ages.get, 1.5, 86_400.0)) == ["old1", "old2", "new"]


def test_at_most_m_per_attribute_value_in_the_top_n() -> None:
    cs = cands("a1", "a2", "a3", "b1", "c1")
    brand = lambda i: [v for v in ATTRS[i] if v.startswith("brand:")]
    out = names(cap_per_value(cs, brand, 2, 3))
    assert out == ["a1", "a2", "b1", "a3", "c1"]  # a3 (3rd of brand x) moved below the top 3
    assert names(cap_per_value(cs, brand, 1, 5)) == ["a1", "b1", "c1", "a2", "a3"]


def test_pins_take_their_positions_and_the_rest_shift_down() -> None:
    out = pin(cands("a1", "a2", "b1", "c1"), {0: "promo", 2: "b1"}, 4)
    assert names(out) == ["promo", "a1", "b1", "a2"]  # b1 moved from 3rd to its pin
    assert out[0].reason == "pinned" and math.isnan(out[0].score) and out[2].reason == "pinned"
    assert names(pin(cands("a1"), {3: "late"}, 5)) == ["a1", "late"]  # past the end: appended


def test_the_new_item_slot_gives_the_best_new_item_a_place_only_where_none_is_listed() -> None:
    new = {"n1", "n2"}.__contains__
    best = Candidate("n1", 0.5, "sequence")
    out = slot_new_item(cands("a1", "a2", "b1", "c1"), 2, best, new)
    assert names(out) == ["a1", "a2", "n1", "b1", "c1"] and out[2].reason == "new_item"
    # a new item already in the first slot + 1 places: nothing changes
    assert names(slot_new_item(cands("a1", "n2", "b1"), 2, best, new)) == ["a1", "n2", "b1"]
    # a new item further down does not count; the best one leaves its old place
    assert names(slot_new_item(cands("a1", "a2", "b1", "n1"), 1, best, new)) == ["a1", "n1", "a2", "b1"]
    assert names(slot_new_item(cands("a1"), 3, best, new)) == ["a1", "n1"]  # short list: appended
    assert names(slot_new_item(cands("a1", "a2"), 0, None, new)) == ["a1", "a2"]  # no new item
    # in the rule order: before caps and pins, which keep their word
    cfg = RerankConfig(new_item_slot=0, pins={0: "promo"})
    out = rerank(cands("a1", "a2", "b1"), cfg, 3, new_item=best, is_new=new)
    assert names(out) == ["promo", "n1", "a1"] and [c.reason for c in out] == ["pinned", "new_item", "sequence"]
    assert RerankConfig(new_item_slot=9).active and not RerankConfig(new_item_slot=9).reorders


def test_all_rules_together_in_order() -> None:
    cfg = RerankConfig(blocklist=frozenset({"a3"}), mmr_lambda=0.5, max_per_value=1,
                       cap_attribute="brand:", cap_top=3, pins={1: "sponsored"})
    assert cfg.active
    brand = lambda i: [v for v in ATTRS.get(i, []) if v.startswith("brand:")]
    out = rerank(cands("a1", "a2", "a3", "b1", "c1"), cfg, 4,
                 similarity=jaccard(lambda i: ATTRS.get(i, [])),
                 values=brand)
    assert "a3" not in names(out) and names(out)[1] == "sponsored" and len(out) == 4
    top = [i for i in names(out) if i != "sponsored"][:3]
    assert len({brand(i)[0] for i in top}) == 3  # one per brand among the first three


def test_scaling_is_unit_free() -> None:
    assert scaled([Candidate("a", 10.0), Candidate("b", 5.0), Candidate("c", 0.0)]) == [1, 0.5, 0]
    assert scaled([Candidate("a", float("nan")), Candidate("b", 2.0)]) == [0.0, 1.0]
    assert scaled([Candidate("a", 3.0), Candidate("b", 3.0)]) == [1.0, 1.0]


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_mmr_never_loses_or_duplicates_items(lam: float) -> None:
    cs = cands("a1", "a2", "a3", "b1", "c1")
    assert sorted(names(mmr(cs, lam, jaccard(lambda i: ATTRS.get(i, [])), 3))) == sorted(names(cs))


def test_jaccard_matrix() -> None:
    m = jaccard(lambda i: ATTRS.get(i, []))(["a1", "a2", "a3", "c1", "none"]).matrix()
    assert m[0, 1] == 1.0 and m[0, 2] == pytest.approx(1 / 3) and m[0, 3] == 0.0 and m[4, 4] == 0.0


def test_rules_from_settings_and_a_bad_pin_is_refused() -> None:
    from streamrec.errors import ConfigError
    from streamrec.settings import Settings

    cfg = RerankConfig.from_settings(Settings(rerank_blocklist="a, b,", rerank_pins="0:x, 3:y",
                                              rerank_mmr_lambda=0.7))
    assert cfg.blocklist == {"a", "b"} and cfg.pins == {0: "x", 3: "y"} and cfg.mmr_lambda == 0.7
    assert cfg.new_item_min_key == float("-inf") and cfg.new_item_content_weight == 0.0  # unset: any
    slot = RerankConfig.from_settings(Settings(rerank_new_item_slot=9, rerank_new_item_content_weight=1.0,
                                               rerank_new_item_min_key=0.86))
    assert (slot.new_item_slot, slot.new_item_content_weight, slot.new_item_min_key) == (9, 1.0, 0.86)
    with pytest.raises(ConfigError, match="position:item"):
        RerankConfig.from_settings(Settings(rerank_pins="first:x"))
    only = RerankConfig.from_settings(Settings(rerank_new_item_slot=9, rerank_new_item_slot_only=True))
    assert only.new_item_slot_only and "new items in the slot only" in only.describe()
    with pytest.raises(ConfigError, match="SLOT_ONLY needs STREAMREC_RERANK_NEW_ITEM_SLOT"):
        RerankConfig.from_settings(Settings(rerank_new_item_slot_only=True))
    with pytest.raises(ConfigError, match="gate with STREAMREC_RERANK_NEW_ITEM_MIN_KEY"):
        RerankConfig.from_settings(Settings(rerank_new_item_slot=9, rerank_new_item_within=50,
                                            rerank_new_item_slot_only=True))


def test_batched_mmr_picks_exactly_what_the_per_list_mmr_picks() -> None:
    import numpy as np

    from serving.rerank import mmr_rows, scaled, scaled_rows

    rng = np.random.default_rng(0)
    b, k, d = 12, 30, 8
    vecs = rng.normal(size=(b, k, d)).astype(np.float32)
    vecs[:, ::7] = vecs[:, :1]  # near-duplicates, so diversity matters
    unit = vecs / np.linalg.norm(vecs, axis=2, keepdims=True)
    scores = -np.sort(-rng.normal(size=(b, k)), axis=1)
    lengths = rng.integers(1, k + 1, b)
    valid = np.arange(k)[None, :] < lengths[:, None]
    for lam in (1.0, 0.8, 0.3, 0.0):
        order = mmr_rows(scores, unit, valid, lam, 10)
        for r in range(b):
            n = int(lengths[r])
            cands = [Candidate(str(j), float(scores[r, j])) for j in range(n)]
            table = {str(j): unit[r, j] for j in range(n)}
            want = [int(c.item) for c in mmr(cands, lam, cosine(lambda items, t=table: np.stack([t[i] for i in items])), 10)]
            assert order[r, :n].tolist() == want, (lam, r)
            assert sorted(order[r, n:].tolist()) == list(range(n, k))
    row = np.array([[3.0, -np.inf, 1.0], [2.0, 2.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    np.testing.assert_allclose(scaled_rows(row)[0], scaled([Candidate("a", 3.0), Candidate("b", -np.inf),
                                                            Candidate("c", 1.0)]))
    assert scaled_rows(row)[1].tolist() == [1.0, 1.0, 0.0] and scaled_rows(row)[2].tolist() == [1.0] * 3


def test_the_rules_describe_themselves_in_one_line() -> None:
    assert RerankConfig().describe() == "none"
    line = RerankConfig(blocklist=frozenset({"a", "b"}), mmr_lambda=0.8, pins={0: "c"},
                        max_per_value=2, cap_attribute="brand:", cap_top=10,
                        new_item_slot=9, new_item_content_weight=1.0).describe()
    assert line == ("blocklist 2, MMR λ 0.8 (vectors), new-item slot 9, content weight 1, "
                    "at most 2 per brand: value in the top 10, pins 1")
