"""The ranking stage: funnel evaluation, training, export into the bundle, and serving."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import torch

from serving.bundle import load_bundle
from serving.funnel import recommend
from serving.ranking import Ranker, candidate_features
from streamrec.errors import BundleRejected
from tests.corrupt import rewrite_manifest
from training.evaluation.evaluate import full_ranks_of, sampled_ranks_of
from training.models.ranker import (
    Candidates,
    NCFRanker,
    RankerConfig,
    ServingRanker,
    export_ranker,
    funnel_ranks,
    retrieve,
    sampled_funnel_ranks,
    score_all,
    train_ranker,
)


def _random_case(n: int = 300, d: int = 8, users: int = 60, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n, d)).astype(np.float32)
    vecs = rng.normal(size=(users, d)).astype(np.float32)
    inputs = [[int(i) for i in rng.choice(np.arange(1, n + 1), size=5, replace=False)] for _ in range(users)]
    targets = np.array([int(rng.choice([i for i in range(1, n + 1) if i not in h])) for h in inputs])
    return items, vecs, inputs, targets


def _no_attrs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n + 1, np.float32), np.zeros((n + 1, 0), np.int64)


def test_the_funnel_without_a_ranker_ranks_exactly_as_retrieval() -> None:
    items, users, inputs, targets = _random_case()
    c = retrieve(users, items, inputs, targets, 20, *_no_attrs(len(items)), 0)
    assert (funnel_ranks(c, targets, None) == full_ranks_of(users, items, inputs, targets)).all()
    assert (sampled_funnel_ranks(c, items, inputs, targets, None)
            == sampled_ranks_of(users, items, inputs, targets)).all()


def test_an_untrained_ranker_keeps_retrievals_order() -> None:
    items, users, inputs, targets = _random_case()
    c = retrieve(users, items, inputs, targets, 20, *_no_attrs(len(items)), 0)
    model = NCFRanker(items.shape[1], 16, torch.zeros(5), torch.ones(5))  # last layer starts at 0
    table = torch.from_numpy(np.vstack([np.zeros((1, items.shape[1]), np.float32), items]))
    scores = score_all(model, c, table)
    np.testing.assert_allclose(scores, c.scores, rtol=1e-6)
    assert (funnel_ranks(c, targets, scores) == funnel_ranks(c, targets, None)).all()


def test_the_served_graph_computes_the_trained_rankers_scores() -> None:
    # the serving arrangement (first layer split by input, standardisation folded in)
    torch.manual_seed(0)
    d, f = 16, 5
    model = NCFRanker(d, 32, torch.randn(f), torch.rand(f) + 0.5)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)  # a trained-looking net: the last layer not 0
    model.eval()
    user, items, feats = torch.randn(7, d), torch.randn(7, 11, d), torch.randn(7, 11, f)
    with torch.no_grad():
        want, got = model(user, items, feats), ServingRanker(model)(user, items, feats)
    assert want.abs().max() > 1.0 and (want - feats[..., 0]).abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _popularity_case(users: int = 1500, k: int = 20, d: int = 8, seed: int = 0) -> tuple:
    """Candidates whose target is always the most popular one; retrieval scores are noise."""
    rng = np.random.default_rng(seed)
    n = 400
    items = rng.normal(size=(n, d)).astype(np.float32)
    log_pop = np.concatenate([[0.0], rng.uniform(0, 5, n)]).astype(np.float32)
    idx = np.stack([rng.choice(np.arange(1, n + 1), size=k, replace=False) for _ in range(users)])
    scores = -np.sort(-rng.normal(size=(users, k)).astype(np.float32), axis=1)
    feats = candidate_features(scores, log_pop[idx], np.zeros((users, k), np.float32))
    targets = idx[np.arange(users), log_pop[idx].argmax(axis=1)]
    ranks = np.array([int(np.flatnonzero(idx[u] == targets[u])[0]) for u in range(users)])
    c = Candidates(rng.normal(size=(users, d)).astype(np.float32), idx, scores, feats, ranks)
    return c, targets, items


def test_the_ranker_learns_a_signal_retrieval_misses_and_is_enabled_for_it() -> None:
    c, targets, items = _popularity_case()
    result = train_ranker(c, targets, items, RankerConfig(epochs=15, patience=15, hidden=32))
    assert result.holdout["ranker"]["ndcg@10"] > result.holdout["retrieval"]["ndcg@10"] + 0.2
    assert result.enabled


def test_a_ranker_that_cannot_beat_retrieval_is_off_by_default() -> None:
    c, targets, items = _popularity_case()
    c.feats[..., 3] = 0.0  # the only signal removed: nothing left to learn
    targets = c.idx[:, 0].copy()  # and retrieval is already perfect
    c.retrieval_rank[:] = 0
    result = train_ranker(c, targets, items, RankerConfig(epochs=3, patience=3, hidden=32))
    assert result.holdout["retrieval"]["ndcg@10"] == 1.0
    assert not result.enabled


def test_the_bundle_carries_the_ranker_and_its_honest_comparison(tiny_ranker_bundle: Path) -> None:
    b = load_bundle(tiny_ranker_bundle)
    assert b.ranker is not None
    report = b.manifest.metrics["ranker"]
    assert set(report["test"]) == {"retrieval", "retrieval+ranking"}
    assert set(report["test"]["retrieval"]) == {"full", "sampled"}
    assert report["enabled"] == (report["holdout_valid"]["ranker"]["ndcg@10"]
                                 > report["holdout_valid"]["retrieval"]["ndcg@10"])
    # retrieval alone in the funnel is the bundle's own test evaluation
    assert report["test"]["retrieval"]["full"] == pytest.approx(b.manifest.metrics["test"]["full"])


@pytest.fixture
def ranker_copy(tiny_ranker_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_ranker_bundle, tmp_path / "b"))


def test_a_ranker_without_its_side_tables_is_refused(ranker_copy: Path) -> None:
    rewrite_manifest(ranker_copy, lambda m: m["files"].pop("ranker.npz"))  # type: ignore[attr-defined]
    with pytest.raises(BundleRejected, match="ranker.onnx without ranker.npz"):
        load_bundle(ranker_copy)


def test_a_ranker_whose_outputs_changed_is_refused(ranker_copy: Path) -> None:
    with np.load(ranker_copy / "ranker.npz") as z:
        data = dict(z)
    data["scores"] = data["scores"] + 1.0
    np.savez(ranker_copy / "ranker.npz", **data)
    rewrite_manifest(ranker_copy)
    with pytest.raises(BundleRejected, match="warm-up scores differ"):
        load_bundle(ranker_copy)


def test_a_ranker_with_side_tables_for_another_catalogue_is_refused(ranker_copy: Path) -> None:
    with np.load(ranker_copy / "ranker.npz") as z:
        data = dict(z)
    data["log_pop"] = data["log_pop"][:-1]
    np.savez(ranker_copy / "ranker.npz", **data)
    rewrite_manifest(ranker_copy)
    with pytest.raises(BundleRejected, match="side tables do not fit"):
        load_bundle(ranker_copy)


def test_the_manifest_must_say_whether_the_ranker_is_on_by_default(ranker_copy: Path) -> None:
    rewrite_manifest(ranker_copy, lambda m: m["metrics"]["ranker"].pop("enabled"))  # type: ignore[index]
    with pytest.raises(BundleRejected, match="enabled"):
        load_bundle(ranker_copy)


def test_the_worker_serves_the_rankers_order(tiny_ranker_bundle: Path, tiny_data) -> None:
    b = load_bundle(tiny_ranker_bundle)
    histories = [tiny_data.vocab.decode(s[-10:]) for s in tiny_data.seqs[:40]]
    off = recommend(b, histories, 10, ranking="off")
    on = recommend(b, histories, 10, ranking="on")
    assert off != on
    for h, r in zip(histories, on, strict=True):
        assert len(r.items) == 10 and not set(h) & set(r.items)
        assert r.scores == sorted(r.scores, reverse=True)
        assert set(r.reasons) == {"sequence"}
    auto = recommend(b, histories, 10)
    assert auto == (on if b.ranker is not None and b.ranker.enabled else off)


def test_an_untrained_ranker_in_the_worker_keeps_retrievals_lists(tiny_ranker_bundle: Path, tiny_data,
                                                                 tmp_path: Path) -> None:
    b = load_bundle(tiny_ranker_bundle)
    assert b.ranker is not None
    model = NCFRanker(b.manifest.dim, 16, torch.zeros(5), torch.ones(5))
    items = np.ascontiguousarray(b.index.dense, np.float32)
    histories = [tiny_data.vocab.encode(tiny_data.vocab.decode(s[-10:])) for s in tiny_data.seqs[:8]]
    c = retrieve(np.ones((8, b.manifest.dim), np.float32), items, histories,
                 np.ones(8, np.int64), 20, *_no_attrs(len(items)), 0)
    export_ranker(model, tmp_path / "r.onnx", c, items)
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    plain = dataclasses.replace(b, ranker=Ranker(session, b.ranker.log_pop, b.ranker.item_attrs,
                                                 list(b.ranker.token_index), True))
    ids = [tiny_data.vocab.decode(s[-10:]) for s in tiny_data.seqs[:30]]
    assert [r.items for r in recommend(plain, ids, 10, ranking="on")] == \
        [r.items for r in recommend(plain, ids, 10, ranking="off")]


def test_the_ranker_report_names_its_split(tiny_ranker_bundle: Path) -> None:
    m = orjson.loads((tiny_ranker_bundle / "manifest.json").read_bytes())
    assert "validation item" in m["metrics"]["ranker"]["split"]


def test_attributes_can_feed_the_ranker_alone(tiny_data, tmp_path: Path) -> None:
    from tests.conftest import TINY
    from training.data.attributes import build
    from training.data.synthetic import item_attributes
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    out = train_and_export(tiny_data, tmp_path / "b", {"max_len": 20, "dim": 16, "layers": 1},
                           TrainConfig(epochs=2, patience=2, batch_size=64, seed=1), progress=False,
                           attributes=build(item_attributes(TINY)),
                           ranker=RankerConfig(candidates=30, epochs=2), tower=False).bundle
    b = load_bundle(out)
    assert b.ranker is not None
    assert b.ranker.item_attrs.shape[1] > 0 and (b.ranker.item_attrs > 0).any()
    assert b.manifest.model_config["attributes"] == 0  # the retrieval model has no tower
    # ... so its item tower is the content map: new items are embedded by it, at the
    # trained items' mean norm
    from serving.catalogue import Catalogue
    from streamrec.items import ItemRecord

    assert b.tower is not None and b.manifest.metrics["item_tower"] == "content_map"
    assert b.manifest.metrics["item_tower_parity_max_abs_diff"] < 1e-4
    tokens = list(b.attributes[b.vocab.ids[0]])
    live = Catalogue().apply([ItemRecord("brand-new", 1, tokens)], b)
    assert live.ids == ("brand-new",)
    assert b.index.dense is not None
    with_attrs = [b.vocab.index(i) for i in b.vocab.ids if b.attributes.get(i)]
    norm = float(np.linalg.norm(b.index.dense[np.asarray(with_attrs) - 1], axis=1).mean())
    assert np.linalg.norm(live.vecs[0]) == pytest.approx(norm, rel=1e-4)


def test_the_worker_ranks_only_as_many_candidates_as_the_ranker_learned(tiny_ranker_bundle: Path,
                                                                        tiny_data) -> None:
    from serving.catalogue import EMPTY
    from serving.slate import rank_rows

    b = load_bundle(tiny_ranker_bundle)
    assert b.ranker is not None and b.ranker.candidates == 50
    history = tiny_data.seqs[0][-5:]
    ids = [i for i in b.vocab.ids if b.vocab.index(i) not in history][:70]
    keys = [b.vocab.index(i) or 0 for i in ids]
    scores = [float(-n) for n in range(70)]
    user = b.encoder.encode(np.asarray([[0] * 15 + history], dtype=np.int64))
    got_keys, got_scores = rank_rows(b, EMPTY, user, np.asarray([keys]), np.asarray([scores], dtype=np.float32),
                                 [history])
    got_scores = got_scores[0].tolist()
    got = b.vocab.decode(got_keys[0].tolist())
    assert sorted(got[:50]) == sorted(ids[:50]) and got[50:] == ids[50:]
    assert got_scores[:50] == sorted(got_scores[:50], reverse=True)
    # the rest keep their order and spacing, just below the ranked head (what MMR reads)
    assert got_scores == sorted(got_scores, reverse=True) and got_scores[50] < got_scores[49]
    assert np.allclose(np.diff(got_scores[50:]), np.diff(scores[50:]))
