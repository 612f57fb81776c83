"""The content blend (serving.content_blend): profiles, the rarity-weighted overlap, re-sorting."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from serving.content_blend import ContentBlend, chosen_blend
from serving.new_item_slot import rarity_weights

# items 1..5 (row 0 PAD): attribute columns 1 (common) and 2, 3 (rare)
COLS = [[], [1, 2], [1], [1, 3], [1], [2]]


def _blend(beta: float, candidates: int = 10, max_len: int = 50) -> ContentBlend:
    rarity = rarity_weights(np.array([0, 5, 2, 1]), catalogue=5)
    return ContentBlend.from_columns(COLS, rarity, beta, candidates, True, max_len)


def test_profiles_count_the_attributes_of_the_last_max_len_items() -> None:
    b = _blend(1.0, max_len=2)
    got = b.profiles([[1, 3], [5, 1, 2], [], [0, 99]])  # 0 (PAD) and unknown 99 are skipped
    np.testing.assert_array_equal(got[0], [0, 2, 1, 1])
    np.testing.assert_array_equal(got[1], [0, 2, 1, 0])  # item 5 is past the last two
    assert not got[2].any() and not got[3].any()


def test_the_overlap_weighs_each_shared_attribute_by_rarity_over_the_root_of_the_count() -> None:
    b = _blend(1.0)
    r = rarity_weights(np.array([0, 5, 2, 1]), catalogue=5)
    assert r[1] == 0.0  # on every item: says nothing
    prof = b.profiles([[1]])  # columns 1 and 2
    got = b.overlap(prof, np.array([[5, 3, 2, 0, -1]]))  # a pad and a new item score 0
    np.testing.assert_allclose(got[0], [r[2], 0.0, 0.0, 0.0, 0.0], rtol=1e-6)
    got = b.overlap(b.profiles([[3, 1]]), np.array([[5, 4]]))
    np.testing.assert_allclose(got[0], [r[2], r[1]], rtol=1e-6)


def test_apply_re_sorts_the_first_candidates_and_keeps_the_rest_below() -> None:
    # user history [1]: item 5 shares the rare column 2; retrieval put it third
    keys = np.array([[2, 4, 5, 3, 0]])
    scores = np.array([[3.0, 2.9, 2.8, 1.0, -np.inf]], dtype=np.float32)
    k, s = _blend(10.0, candidates=3).apply(keys, scores, [[1]])
    assert k[0].tolist() == [5, 2, 4, 3, 0]  # 5 first; 3 (past the candidates) stays below
    assert s[0, 0] > s[0, 1] > s[0, 2] > s[0, 3] and np.isneginf(s[0, 4])
    same_k, same_s = _blend(0.0, candidates=3).apply(keys, scores, [[1]])
    assert same_k.tolist() == keys.tolist()
    np.testing.assert_array_equal(same_s, scores)


def test_the_modes_choose_the_blend_as_the_ranker_modes_choose_the_ranker() -> None:
    on, off = _blend(1.0), ContentBlend.from_columns(COLS, np.ones(4, np.float32), 1.0, 10, False)
    assert chosen_blend(on, "auto") is on and chosen_blend(off, "auto") is None
    assert chosen_blend(off, "on") is off and chosen_blend(on, "off") is None
    assert chosen_blend(None, "on") is None


def test_a_catalogue_blend_uses_every_token_the_columns_know() -> None:
    columns = {"rock": 1, "indie": 2, "emo": 3}
    attrs = {"a": ["rock", "indie"], "b": ["rock"], "c": ["rock", "emo", "unknown"]}
    b = ContentBlend.of_catalogue(columns, ["a", "b", "c", "d"], attrs, 2.0, 50, True, 20)
    assert b.cols.shape == (5, 2) and b.beta == 2.0 and b.candidates == 50 and b.max_len == 20
    assert b.cols[3].tolist() == [1, 3] and not b.weights[4].any()  # d: no attributes
    want = rarity_weights(np.array([0, 3, 1, 1]), catalogue=3)
    np.testing.assert_allclose(b.weights[1], want[[1, 2]] / np.sqrt(2), rtol=1e-6)


def test_the_worker_orders_lists_as_the_offline_blend_scores_them(tiny_blend_bundle: Path) -> None:
    """A bundle trained with attributes carries the blend training chose; ``recommend`` with
    the blend on writes, for every user, the first ten items of the list the offline
    evaluation (training.models.blend) ranks, and with it off, retrieval's own."""
    from serving.bundle import load_bundle
    from serving.funnel import recommend
    from streamrec.sequences import pad_batch
    from training.models.blend import candidate_lists

    b = load_bundle(tiny_blend_bundle)
    assert b.blend is not None and b.blend.beta > 0
    report = b.manifest.metrics["content_blend"]
    assert report["beta"] == b.blend.beta and "retrieval" in report["test"]
    rng = np.random.default_rng(3)
    histories = [list(rng.choice(b.vocab.ids, 5, replace=False)) for _ in range(40)]
    encoded = [b.vocab.encode(h) for h in histories]
    users = b.encoder.encode(pad_batch(encoded, b.max_len))
    keys, scores = candidate_lists(users, b.index.vectors(), encoded, b.blend.candidates)
    blended, _ = b.blend.apply(keys, scores, encoded)
    on = recommend(b, histories, 10, blending="on")
    off = recommend(b, histories, 10, blending="off")
    moved = 0
    for u in range(len(histories)):
        want = [b.vocab.ids[i - 1] for i in blended[u, :10]]
        assert on[u].items == want
        assert off[u].items == [b.vocab.ids[i - 1] for i in keys[u, :10]]
        moved += on[u].items != off[u].items
    assert moved  # the blend reorders some lists


@pytest.mark.parametrize("edit", [
    lambda b: b.update(beta=-1.0), lambda b: b.update(beta="big"), lambda b: b.pop("enabled"),
    lambda b: b.update(candidates=0), lambda b: b.update(max_len=None)])
def test_a_bundle_with_a_bad_blend_is_refused(tiny_blend_bundle: Path, tmp_path: Path,
                                              edit: Callable[[dict[str, object]], None]) -> None:
    from serving.bundle import load_bundle
    from streamrec.errors import BundleRejected
    from tests.corrupt import rewrite_manifest

    d = tmp_path / "b"
    shutil.copytree(tiny_blend_bundle, d)
    rewrite_manifest(d, lambda m: edit(m["metrics"]["content_blend"]))  # type: ignore[index]
    with pytest.raises(BundleRejected, match="metrics.content_blend needs") as e:
        load_bundle(d)
    assert e.value.check == "content_blend"


def test_a_blend_without_the_attributes_it_reads_is_refused(tiny_blend_bundle: Path,
                                                            tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """A bundle without attributes (the plain tiny one) given the blend's report."""
    import orjson

    from serving.bundle import load_bundle
    from streamrec.errors import BundleRejected
    from tests.corrupt import rewrite_manifest

    report = orjson.loads((tiny_blend_bundle / "manifest.json").read_bytes())["metrics"]["content_blend"]
    d = tmp_path / "b"
    shutil.copytree(tiny_bundle_dir, d)
    rewrite_manifest(d, lambda m: m["metrics"].update(content_blend=report))  # type: ignore[attr-defined]
    with pytest.raises(BundleRejected, match="without the item attributes"):
        load_bundle(d)


def test_training_reports_retrieval_and_the_blend_on_both_splits(tiny_blend_bundle: Path) -> None:
    import orjson

    report = orjson.loads((tiny_blend_bundle / "manifest.json").read_bytes())["metrics"]["content_blend"]
    assert isinstance(report["enabled"], bool) and report["candidates"] == 200
    by_beta = report["valid"]["ndcg@10_by_beta_relative"]
    best = max(by_beta.values())
    assert report["valid"]["blend"]["ndcg@10"] == best  # the best weight on validation
    assert report["enabled"] == (best > report["valid"]["retrieval"]["ndcg@10"])
    assert set(report["test"]) == {"retrieval", "blend"}


def test_after_a_refit_the_blend_is_not_chosen_and_says_why() -> None:
    from training.data.attributes import build
    from training.pipeline import _fit_blend

    attrs = build({"a": ["x"], "b": ["y"]})
    report = _fit_blend(None, None, attrs, np.zeros((0, 4)), True, None)  # type: ignore[arg-type]
    assert report is not None and report["enabled"] is False and "--no-refit" in report["skipped"]
    assert _fit_blend(None, None, None, np.zeros((0, 4)), False, None) is None  # type: ignore[arg-type]


def test_evaluating_the_bundle_reproduces_the_blends_training_figures(
        tiny_blend_bundle: Path, tiny_data: object) -> None:
    """``streamrec evaluate`` on a bundle with a blend scores it as served (ONNX Runtime and
    FAISS) and gets training's test figures for it."""
    import orjson

    from training.evaluation.bundle import evaluate_bundle

    report = orjson.loads((tiny_blend_bundle / "manifest.json").read_bytes())["metrics"]["content_blend"]
    got = evaluate_bundle(tiny_blend_bundle, tiny_data)  # type: ignore[arg-type]
    assert got["content_blend"]["beta"] == report["beta"]
    for k, v in report["test"]["blend"].items():
        assert got["content_blend"]["full"][k] == pytest.approx(v, abs=1e-9), k
