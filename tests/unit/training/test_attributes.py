"""Item attributes (training.data.attributes) and the cold-start split (training.evaluation.cold_start)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from streamrec.errors import DataError
from training.data.attributes import build, encode_rows, load_attributes
from training.data.sequences import from_id_sequences
from training.data.synthetic import SyntheticSpec, generate, item_attributes
from training.evaluation.cold_start import attribute_knn_ranks, by_target, choose_cold, cold_split


def test_item2attributes_json_and_text_lines_read_alike(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(orjson.dumps({"10": [1, 2], "11": [2], "12": []}))
    (tmp_path / "a.tsv").write_text("10\t1 2\n11\t2\n\n12\t \n".replace("12\t \n", ""))
    for name in ("a.json", "a.tsv"):
        a = load_attributes(tmp_path / name)
        assert a.tokens == ("2", "1")  # by frequency, then name
        assert a.of["10"] == ("1", "2") and a.of["11"] == ("2",)
    m = load_attributes(tmp_path / "a.json").matrix(["11", "10", "99"], max_attrs=3)
    assert m.tolist() == [[0, 0, 0], [1, 0, 0], [2, 1, 0], [0, 0, 0]]  # row 0 pads; 99 has none


def test_bad_attribute_files_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected an object"):
        load_attributes(tmp_path / "x.json")
    (tmp_path / "y.tsv").write_text("item-without-tab\n")
    with pytest.raises(DataError, match=r"y.tsv:1: expected"):
        load_attributes(tmp_path / "y.tsv")
    with pytest.raises(DataError, match="cannot read"):
        load_attributes(tmp_path / "missing.json")


def test_rare_tokens_are_dropped_and_rows_are_cut_to_max_attrs() -> None:
    a = build({"1": ["x", "y", "rare"], "2": ["x", "y"]}, min_count=2)
    assert set(a.tokens) == {"x", "y"} and a.of["1"] == ("x", "y")
    assert encode_rows({"x": 1, "y": 2}, [["y", "x", "z"]], 1).tolist() == [[2]]


def test_cold_items_leave_every_sequence_but_the_test_target() -> None:
    data = from_id_sequences("t", ["u1", "u2", "u3"],
                             [["a", "b", "c", "d", "e"], ["a", "e", "b", "c", "d"], ["e", "a"]])
    cold = np.zeros(data.num_items + 1, dtype=bool)
    e, d = data.vocab.encode(["e"])[0], data.vocab.encode(["d"])[0]
    cold[[e]] = True
    split = cold_split(data, cold)
    seen = {i for s in split.train for i in s} | set(split.valid_target.tolist())
    assert e not in seen  # never trained on, never an input, never validated
    test = dict(zip(split.eval_users.tolist(), split.test_target.tolist(), strict=True))
    assert test == {0: e, 1: d}  # u1 keeps its cold target; u2's input loses its e
    assert e not in [i for s in split.inputs("test") for i in s]
    r = by_target(np.array([0, 50]), split.targets("test"), cold)
    assert r["cold_users"] == 1 and r["cold"]["hr@10"] == 1.0 and r["warm"]["hr@10"] == 0.0


def test_choose_cold_is_seeded_and_never_pad() -> None:
    a, b = choose_cold(100, 0.1, seed=3), choose_cold(100, 0.1, seed=3)
    assert (a == b).all() and a.sum() == 10 and not a[0]
    with pytest.raises(ValueError):
        choose_cold(100, 1.5, 0)


def test_attribute_knn_ranks_items_sharing_the_history_attributes_first() -> None:
    attrs = np.array([[0, 0], [1, 2], [1, 0], [3, 0], [1, 2]])  # items 1..4
    ranks = attribute_knn_ranks(attrs, 3, [[1]], np.array([4]))  # 4 shares both with 1
    assert ranks.tolist() == [0]
    ranks = attribute_knn_ranks(attrs, 3, [[1]], np.array([3]))  # 3 shares nothing
    assert ranks.tolist() == [2]


def test_rarity_weighted_knn_ranks_a_shared_rare_attribute_above_a_shared_common_one() -> None:
    attrs = np.array([[0, 0], [1, 2], [1, 0], [2, 0], [1, 0], [1, 0]])  # 1 common, 2 rare
    tied = attribute_knn_ranks(attrs, 2, [[1], [1]], np.array([2, 3]))
    assert tied.tolist() == [3, 3]  # plain overlap: items 2 to 5 tie (ties count against)
    weights = np.array([0.0, 0.1, 4.0], dtype=np.float32)
    ranks = attribute_knn_ranks(attrs, 2, [[1], [1]], np.array([3, 2]), weights)
    assert ranks.tolist() == [0, 3]  # 3 (rare) first; 2 ties with 4 and 5 behind it


def test_the_rarity_is_counted_over_the_warm_items_with_attributes() -> None:
    from serving.new_item_slot import IDF_POWER
    from training.evaluation.cold_start import SlotContent

    attrs = np.array([[0, 0], [1, 2], [1, 0], [2, 0], [0, 0], [1, 3]])  # item 4: none
    cold = np.array([False, False, False, False, False, True])  # item 5 (with 3) is cold
    got = SlotContent(1.0, attrs).rarity(cold, width=5)
    # 3 warm items with attributes: 1 on two of them, 2 on two, 3 and 4 on none
    want = [np.log(4 / (1 + d)) ** IDF_POWER for d in (0, 2, 2, 0, 0)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_synthetic_attributes_cover_every_item_and_carry_the_cluster() -> None:
    spec = SyntheticSpec(users=50, items=60, clusters=6, seed=1)
    data, attrs = generate(spec), item_attributes(spec)
    assert set(data.vocab.ids) <= set(attrs) and all(len(a) == 3 for a in attrs.values())
    assert len({a[0] for a in attrs.values()}) <= 6


def test_the_content_map_recovers_vectors_that_are_means_of_attribute_vectors() -> None:
    import numpy as np

    from training.evaluation.cold_start import fit_content_map, mapped_vectors

    rng = np.random.default_rng(0)
    truth = np.vstack([np.zeros((1, 4)), rng.normal(size=(6, 4))]).astype(np.float32)  # A = 6
    attrs = np.array([[a, b] for a in range(1, 7) for b in range(1, 7) if a < b] + [[3, 0]])
    vecs = mapped_vectors(attrs, truth)
    m = fit_content_map(attrs, vecs, num_attrs=6, ridge=1e-6)
    np.testing.assert_allclose(mapped_vectors(attrs, m), vecs, atol=1e-4)
    scaled = mapped_vectors(attrs, m, scale_to=2.0)
    np.testing.assert_allclose(np.linalg.norm(scaled, axis=1), 2.0, rtol=1e-5)


def test_a_content_map_is_fitted_on_the_items_with_attributes_only() -> None:
    import numpy as np

    from streamrec.errors import ConfigError
    from training.evaluation.cold_start import ContentMap

    attrs = np.array([[1, 2], [2, 0], [0, 0]])  # the third item has no attributes
    vecs = np.array([[3.0, 4.0], [0.0, 1.0], [100.0, 0.0]], dtype=np.float32)
    cmap = ContentMap.fit(attrs, vecs, num_attrs=2)
    assert cmap.norm == pytest.approx(3.0)  # (5 + 1) / 2: the third item does not count
    assert np.linalg.norm(cmap.vectors(attrs[:2]), axis=1) == pytest.approx([3.0, 3.0], rel=1e-5)
    assert not cmap.vectors(attrs[2:]).any()  # no attributes: the zero vector
    with pytest.raises(ConfigError, match="no item of the data has attributes"):
        ContentMap.fit(np.zeros((2, 2), dtype=np.int64), vecs[:2], num_attrs=2)


@pytest.mark.parametrize(("slot", "within"), [(0, 0), (3, 0), (9, 0), (3, 12)])
def test_slot_ranks_are_the_ranks_of_the_lists_the_new_item_slot_writes(slot: int, within: int) -> None:
    """The offline arithmetic against the worker's rule applied to every full list."""
    from serving.rerank import Candidate, slot_new_item
    from training.evaluation.cold_start import slot_ranks

    rng = np.random.default_rng(slot)
    n_items, n_users = 40, 60
    vecs = rng.standard_normal((n_items, 8)).astype(np.float32)  # row r = item r + 1
    users = rng.standard_normal((n_users, 8)).astype(np.float32)
    cold = np.zeros(n_items + 1, dtype=bool)
    cold[rng.choice(np.arange(1, n_items + 1), 6, replace=False)] = True
    inputs = [rng.choice(np.arange(1, n_items + 1), 3, replace=False).tolist() for _ in range(n_users)]
    targets = np.array([rng.choice([i for i in range(1, n_items + 1) if i not in h]) for h in inputs])
    got = slot_ranks(users, vecs, inputs, targets, cold, slot, within)
    moved = 0
    for u in range(n_users):
        scores = vecs @ users[u]
        order = [i for i in np.argsort(-scores) + 1 if i not in inputs[u]]
        listed = [Candidate(str(i), float(scores[i - 1])) for i in order]
        best = next(c for c in listed if cold[int(c.item)])
        if within and listed.index(best) >= within:
            best = None  # the gate: the worker passes no new item for this user
        out = slot_new_item(listed, slot, best, lambda i: bool(cold[int(i)]))
        want = [c.item for c in out].index(str(targets[u]))
        assert got[u] == want
        moved += want != order.index(targets[u])
    assert moved  # the rule moved some target


@pytest.mark.parametrize(("slot", "weight", "min_key", "merged"),
                         [(3, 5.0, -np.inf, True), (9, 5.0, -np.inf, True), (3, 5.0, 4.0, True),
                          (3, 0.0, 1.0, True), (3, 5.0, -np.inf, False), (9, 5.0, 4.0, False)])
def test_slot_ranks_by_key_are_the_ranks_of_the_lists_the_worker_writes(
        slot: int, weight: float, min_key: float, merged: bool) -> None:
    """With a content weight or a minimum key, the slot's item is the best cold item by
    the worker's key (serving.new_item_slot), often not the first cold item in the list. Not
    ``merged`` (``STREAMREC_RERANK_NEW_ITEM_SLOT_ONLY``): the worker's list holds no cold
    item but the slot's."""
    from serving.new_item_slot import (
        CONTENT_WINDOW,
        IDF_POWER,
        content_profiles,
        item_columns,
        new_item_keys,
    )
    from serving.rerank import Candidate, slot_new_item
    from training.evaluation.cold_start import SlotContent, slot_ranks

    rng = np.random.default_rng(slot + int(weight))
    n_items, n_users, n_attrs = 40, 80, 6
    vecs = rng.standard_normal((n_items, 8)).astype(np.float32)  # row r = item r + 1
    users = rng.standard_normal((n_users, 8)).astype(np.float32)
    attrs = np.zeros((n_items + 1, 2), dtype=np.int64)
    attrs[1:] = rng.integers(0, n_attrs + 1, (n_items, 2))  # 0 = none
    cold = np.zeros(n_items + 1, dtype=bool)
    cold[rng.choice(np.arange(1, n_items + 1), 8, replace=False)] = True
    inputs = [rng.choice(np.arange(1, n_items + 1), 4, replace=False).tolist() for _ in range(n_users)]
    targets = np.array([rng.choice([i for i in range(1, n_items + 1) if i not in h]) for h in inputs])
    got = slot_ranks(users, vecs, inputs, targets, cold, slot,
                     content=SlotContent(weight, attrs), min_key=min_key, merged=merged)
    cols = [row[row > 0] for row in attrs]
    # each attribute's rarity over the warm items with attributes (the bundle's catalogue)
    known = [set(cols[i].tolist()) for i in range(1, n_items + 1) if not cold[i] and len(cols[i])]
    rarity = np.array([np.log((1 + len(known)) / (1 + sum(a in k for k in known))) ** IDF_POWER
                       for a in range(n_attrs + 1)], dtype=np.float32)
    moved = chosen_not_first = gated = 0
    for u in range(n_users):
        scores = vecs @ users[u]
        order = [i for i in np.argsort(-scores) + 1 if i not in inputs[u]]
        listed = [Candidate(str(i), float(scores[i - 1])) for i in order]
        new = [i for i in order if cold[i]]
        keys = new_item_keys(scores[np.array(new) - 1][None, :], users[u:u + 1], weight,
                             content_profiles([[cols[i] for i in inputs[u][-CONTENT_WINDOW:]]], n_attrs + 1),
                             item_columns([cols[i] for i in new], n_attrs + 1) * rarity)[0]
        pick = int(np.argmax(keys))
        best = listed[order.index(new[pick])] if keys[pick] >= min_key else None
        chosen_not_first += best is not None and pick > 0
        gated += best is None
        if not merged:  # the worker's candidates: the bundle's (warm) items only
            listed = [c for c in listed if not cold[int(c.item)]]
        out = slot_new_item(listed, slot, best, lambda i: bool(cold[int(i)]))
        items = [c.item for c in out]
        want = items.index(str(targets[u])) if str(targets[u]) in items else len(items) + 1
        if want > len(items):  # a cold target not in the slot: in no list
            assert got[u] >= len(listed)
            continue
        assert got[u] == want
        moved += want != order.index(targets[u])
    assert moved  # the cases that differ from the vector choice occur:
    assert chosen_not_first if weight else gated  # another item chosen; users gated out
    assert gated if min_key > -np.inf else not gated


def test_the_minimum_key_is_the_lowest_quantile_whose_validation_loss_stays_under_the_cap() -> None:
    from training.evaluation.cold_start import choose_min_key

    keys = np.arange(100, dtype=np.float32)  # quantiles 0, 1.98, 3.96, ... (steps of 2%)
    least, table = choose_min_key(lambda k: 1.0 - 0.03 * (1 - k / 100), 1.0, keys, cap=0.015)
    # 49.5 (the median) loses 0.03 * 0.505 > 0.015; the next quantile, 51.48, does not
    assert least == pytest.approx(51.48) and len(table) == 50
    assert choose_min_key(lambda k: 0.5, 1.0, keys)[0] == float("inf")  # none: nobody is shown one
    assert choose_min_key(lambda k: 1.0, 1.0, np.array([-np.inf]))[0] == float("inf")


def test_the_slot_gate_is_the_deepest_whose_validation_loss_stays_under_the_cap() -> None:
    from training.evaluation.cold_start import choose_within

    loss = {10: 0.001, 20: 0.004, 50: 0.01, 100: 0.02, 200: 0.03, 500: 0.04, 1000: 0.05, 0: 0.06}
    within, table = choose_within(lambda w: 1.0 - loss[w], 1.0, slot=9, cap=0.015)
    assert within == 50 and table[50] == pytest.approx(0.99)
    assert choose_within(lambda w: 0.5, 1.0, slot=9)[0] == 10  # none: the slot never moves an item
    assert choose_within(lambda w: 1.0, 1.0, slot=9)[0] == 0  # free: no gate
    assert 10 not in choose_within(lambda w: 1.0, 1.0, slot=9)[1]  # within <= slot + 1 is moot


def test_the_slot_rows_report_what_slot_ranks_gives_for_each_gate() -> None:
    """``_slot_rows`` scores each split once and applies the gates to stored parts: every
    row and every validation figure it reports is what ``slot_ranks`` gives with that gate."""
    from training.evaluation.cold_start import SlotContent, slot_ranks
    from training.evaluation.ranking_metrics import hr_ndcg, mask_history, ranks_from_scores
    from training.pipeline import _slot_rows

    rng = np.random.default_rng(7)
    n_items, n_users = 60, 150
    seqs = [[f"i{j}" for j in rng.choice(n_items, 6, replace=False)] for _ in range(n_users)]
    data = from_id_sequences("t", [f"u{u}" for u in range(n_users)], seqs)
    cold = choose_cold(data.num_items, 0.15, seed=1)
    split = cold_split(data, cold)
    vecs = rng.standard_normal((data.num_items, 8)).astype(np.float32)  # row r = item r + 1
    users = rng.standard_normal((len(split.targets("test")), 8)).astype(np.float32)
    v_users = rng.standard_normal((len(split.targets("valid")), 8)).astype(np.float32)
    attrs = np.zeros((data.num_items + 1, 2), dtype=np.int64)
    attrs[1:] = rng.integers(0, 7, (data.num_items, 2))
    content = SlotContent(2.0, attrs)
    report: dict = {}
    _slot_rows(report, "m", users, v_users, vecs, split, cold, 3, content)
    inputs, targets = split.inputs("test"), split.targets("test")
    v_inputs, v_targets = split.inputs("valid"), split.targets("valid")

    def test_row(**gate: object) -> dict:
        return by_target(slot_ranks(users, vecs, inputs, targets, cold, 3, **gate), targets, cold)

    def valid_ndcg(**gate: object) -> float:
        return hr_ndcg(slot_ranks(v_users, vecs, v_inputs, v_targets, cold, 3, **gate))["ndcg@10"]

    def same(row: dict, want: dict) -> None:
        assert {k: row[k] for k in want} == want

    same(report["m_slot"], test_row())
    gated = report["m_slot_gated"]
    same(gated, test_row(within=gated["within"]))
    for w, v in gated["valid_ndcg@10_by_within"].items():
        assert v == valid_ndcg(within=int(w))
    same(report["m_slot_content"], test_row(content=content))
    keyed = report["m_slot_content_gated"]
    same(keyed, test_row(content=content, min_key=keyed["min_key"]))
    for k, v in keyed["valid_ndcg@10_by_min_key"].items():
        assert v == valid_ndcg(content=content, min_key=float(k))
    assert len(gated["valid_ndcg@10_by_within"]) > 1 and len(keyed["valid_ndcg@10_by_min_key"]) > 1
    # new items through the slot only: the gate chosen against the lists with no new item
    same(report["m_slot_only_content"], test_row(content=content, merged=False))
    only = report["m_slot_only_content_gated"]
    same(only, test_row(content=content, min_key=only["min_key"], merged=False))
    for k, v in only["valid_ndcg@10_by_min_key"].items():
        assert v == valid_ndcg(content=content, min_key=float(k), merged=False)
    scores = v_users @ np.vstack([np.zeros((1, 8), np.float32), vecs]).T  # the lists with no
    mask_history(scores, v_inputs)  # new item at all: what the ID-only model ranks
    scores[:, cold] = -np.inf
    assert only["valid_ndcg@10_id_only"] == pytest.approx(
        hr_ndcg(ranks_from_scores(scores, v_targets))["ndcg@10"])
