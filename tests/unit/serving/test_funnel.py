"""Unit tests of :mod:`serving.funnel`: each stage alone, and a funnel as a value."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from serving.bundle import ModelBundle, load_bundle
from serving.funnel import (
    Batch,
    Funnel,
    FunnelConfig,
    Slate,
    blend_stage,
    candidates_stage,
    fill_stage,
    prepare,
    rank_stage,
    recommend,
    rerank_stage,
)
from serving.list_types import SOURCE_MODEL, SOURCE_POPULAR, SOURCE_TRENDING, Ranked
from serving.rerank import RerankConfig
from streamrec.sequences import PAD
from streamrec.settings import Settings


@pytest.fixture(scope="module")
def bundle(tiny_bundle_dir: Path) -> ModelBundle:
    return load_bundle(tiny_bundle_dir)


def test_the_config_is_built_from_settings_in_one_place() -> None:
    s = Settings(top_n=7, candidates=50, ranker="off", content_blend="on", rerank_mmr_lambda=0.5,
                 rerank_blocklist="a, b")
    c = FunnelConfig.from_settings(s)
    assert (c.top_n, c.candidates, c.ranking, c.blending) == (7, 50, "off", "on")
    assert c.rules == RerankConfig.from_settings(s)
    assert c.rules.blocklist == frozenset({"a", "b"}) and c.rules.mmr_lambda == 0.5


def test_the_plan_retrieves_as_wide_as_its_stages_need(bundle: ModelBundle) -> None:
    live = Batch([]).live
    assert Funnel(FunnelConfig(top_n=10, candidates=80)).plan(bundle, live).width == 10
    mmr = Funnel(FunnelConfig(top_n=10, candidates=80, rules=RerankConfig(mmr_lambda=0.5)))
    plan = mmr.plan(bundle, live)
    assert plan.width == 80 and plan.batched and plan.per_list.mmr_lambda == 1.0
    attributes = RerankConfig(mmr_lambda=0.5, mmr_similarity="attributes")
    plan = Funnel(FunnelConfig(top_n=10, rules=attributes)).plan(bundle, live)
    assert not plan.batched and plan.per_list == attributes  # MMR by attributes: per list


def test_prepare_marks_blocklisted_items_seen_and_finds_the_unmodelled_users(
        bundle: ModelBundle) -> None:
    known = list(bundle.vocab.ids[:3])
    rules = RerankConfig(blocklist=frozenset({bundle.vocab.ids[10]}))
    users = prepare(bundle, Batch([known, ["never-seen"], []]), rules)
    assert users.modelled == [0]
    assert users.encoded[0] == bundle.vocab.encode(known)
    assert users.seen[0] == set(bundle.vocab.encode(known)) | {11}
    assert users.seen[1] == {11} and users.encoded[1] == []


def test_candidates_are_unseen_and_as_wide_as_the_plan(bundle: ModelBundle) -> None:
    histories = [list(bundle.vocab.ids[i:i + 5]) for i in range(0, 30, 5)]
    batch = Batch(histories)
    funnel = Funnel(FunnelConfig(top_n=10, candidates=40, rules=RerankConfig(mmr_lambda=0.5)))
    plan = funnel.plan(bundle, batch.live)
    users = prepare(bundle, batch, plan.rules)
    slate = candidates_stage(bundle, batch, users, plan)
    assert slate.keys.shape == slate.scores.shape == (len(histories), 40)
    assert slate.vecs.shape == (len(histories), bundle.manifest.dim)
    for row, u in enumerate(users.modelled):
        assert not set(slate.keys[row].tolist()) & users.seen[u]
        assert (np.diff(slate.scores[row]) <= 0).all()  # best first
    assert slate.best_new == [None] * len(histories)  # no catalogue: no new item


def _slate(keys: list[list[int]], scores: list[list[float]]) -> Slate:
    k = np.array(keys, dtype=np.int64)
    return Slate(k, np.array(scores, dtype=np.float32), np.zeros((len(k), 4), np.float32),
                 [None] * len(k), [[1]] * len(k))


def test_a_stage_that_does_not_run_passes_the_slate_through(bundle: ModelBundle) -> None:
    slate = _slate([[3, 2, PAD]], [[0.9, 0.5, -math.inf]])
    assert blend_stage(slate, None) is slate
    assert rank_stage(bundle, Batch([]).live, slate, None) is slate


def test_rerank_decodes_the_keys_with_their_reasons_and_cuts_to_top_n(bundle: ModelBundle) -> None:
    plan = Funnel(FunnelConfig(top_n=2)).plan(bundle, Batch([]).live)
    slate = _slate([[5, 9, 4], [7, PAD, PAD]], [[0.9, 0.8, 0.1], [0.5, -math.inf, -math.inf]])
    lists = rerank_stage(bundle, Batch([["x"], ["y"]]), slate, plan)
    ids = bundle.vocab.ids
    assert [r.items for r in lists] == [[ids[4], ids[8]], [ids[6]]]
    assert [r.reasons for r in lists] == [["sequence", "sequence"], ["sequence"]]
    assert lists[0].scores == pytest.approx([0.9, 0.8])
    assert {r.source for r in lists} == {SOURCE_MODEL}


def test_rerank_pins_a_business_item(bundle: ModelBundle) -> None:
    rules = RerankConfig(pins={0: "promo"})
    plan = Funnel(FunnelConfig(top_n=3, rules=rules)).plan(bundle, Batch([]).live)
    lists = rerank_stage(bundle, Batch([["x"]]), _slate([[5, 9, 4]], [[0.9, 0.8, 0.1]]), plan)
    assert lists[0].items[0] == "promo" and lists[0].reasons == ["pinned", "sequence", "sequence"]


def test_fill_tops_up_short_lists_and_gives_the_unmodelled_the_fallback(bundle: ModelBundle) -> None:
    ids = bundle.vocab.ids
    batch = Batch([[ids[0]], ["never-seen"]], trending=["hot-1", "hot-2"])
    plan = Funnel(FunnelConfig(top_n=5)).plan(bundle, batch.live)
    users = prepare(bundle, batch, plan.rules)
    short = Ranked([ids[1]], [0.5], SOURCE_MODEL, ["sequence"])
    filled, fallback = fill_stage(bundle, batch, users, [short, None], plan)
    assert len(filled.items) == 5 and filled.items[0] == ids[1]
    assert filled.reasons == ["sequence"] + ["popular"] * 4
    assert ids[0] not in filled.items and all(math.isnan(s) for s in filled.scores[1:])
    assert fallback.source == SOURCE_TRENDING and fallback.items[:2] == ["hot-1", "hot-2"]
    assert fallback.reasons == ["trending"] * 2 + ["popular"] * 3
    assert fill_stage(bundle, Batch([["never-seen"]]), users, [None], plan)[0].source == SOURCE_POPULAR


def test_a_worker_can_hold_two_funnels_for_the_same_batch(bundle: ModelBundle) -> None:
    histories = [list(bundle.vocab.ids[i:i + 4]) for i in range(0, 40, 4)]
    plain = Funnel(FunnelConfig(top_n=10))
    first = plain.run(bundle, Batch(histories))
    blocked = frozenset(r.items[0] for r in first)
    other = Funnel(replace(plain.config, rules=RerankConfig(blocklist=blocked)))
    second = other.run(bundle, Batch(histories))
    assert plain.run(bundle, Batch(histories)) == first  # a funnel is a value: no state
    assert all(not set(r.items) & blocked for r in second)
    assert [r.items for r in recommend(bundle, histories, 10)] == [r.items for r in first]
