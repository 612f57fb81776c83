"""Unit tests of :mod:`serving.online` and its Prometheus export."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from serving.online import DEFAULT_ARM, OnlineCounts, OnlineMetrics, click_rank, from_prometheus
from streams.prometheus import WorkerMetrics


def test_the_rank_is_one_based_and_none_off_the_list() -> None:
    assert click_rank(("a", "b", "c"), "a") == 1
    assert click_rank(("a", "b", "c"), "c") == 3
    assert click_rank(("a", "b"), "z") is None
    assert click_rank((), "a") is None


def test_counts_follow_the_metric_definitions() -> None:
    c = OnlineCounts()
    for rank in (1, 3, 10, 15, None):
        c.add(rank)
    r = c.ratios()
    assert c.clicks == 5 and c.on_list == 4
    assert r["hr@1"] == pytest.approx(1 / 5)
    assert r["hr@5"] == pytest.approx(2 / 5)
    assert r["hr@10"] == pytest.approx(3 / 5)
    assert r["hr@20"] == pytest.approx(4 / 5)
    assert r["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 15) / 5)
    assert r["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5)
    assert r["on_list"] == pytest.approx(4 / 5)
    assert OnlineCounts().ratios()["hr@10"] == 0.0


def test_a_click_is_judged_by_the_list_held_before_it() -> None:
    m = OnlineMetrics()
    m.observe([("u1", "a", None)])  # no list yet
    assert m.without_list == 1 and m.counts == {}
    m.remember([("u1", ["a", "b", "c"], None), ("u2", ["x"], None)], "v1")
    m.observe([("u1", "b", None), ("u1", "q", None), ("u2", "x", None)])
    c = m.counts[("v1", DEFAULT_ARM)]
    assert (c.clicks, c.hits[1], c.hits[5], c.on_list) == (3, 1, 2, 2)
    m.remember([("u1", ["q"], None)], "v2")  # a new model's list replaces the old one
    m.observe([("u1", "q", None)])
    assert m.counts[("v2", DEFAULT_ARM)].hits[1] == 1
    assert m.counts[("v1", DEFAULT_ARM)].clicks == 3


def test_the_oldest_lists_are_forgotten_beyond_the_bound() -> None:
    m = OnlineMetrics(max_users=2)
    m.remember([("u1", ["a"], None), ("u2", ["a"], None)], "v1")
    m.remember([("u1", ["b"], None)], "v1")  # u1 written again: u2 is now the oldest
    m.remember([("u3", ["c"], None)], "v1")
    assert list(m.lists) == ["u1", "u3"]
    m.observe([("u2", "a", None)])
    assert m.without_list == 1


def test_coverage_is_distinct_recommended_items_over_the_catalogue() -> None:
    m = OnlineMetrics()
    m.remember([("u1", ["a", "b"], None), ("u2", ["b", "c"], None)], "v1")
    assert m.coverage("v1", 10) == pytest.approx(0.3)
    assert m.coverage("v2", 10) == 0.0


def test_the_counts_round_trip_through_metrics_text() -> None:
    metrics, online = WorkerMetrics(), OnlineMetrics()
    metrics.watch_online(online, lambda: ("v1", 4))
    online.remember([("u1", ["a", "b"], None), ("u2", ["c"], None)], "v1")
    online.observe([("u1", "b", None), ("u2", "z", None), ("u3", "a", None)])
    text = generate_latest(metrics.registry).decode()
    assert 'streamrec_online_hits_total{arm="all",k="5",model_version="v1"} 1.0' in text
    assert 'streamrec_online_coverage_ratio{model_version="v1"} 0.75' in text
    got = from_prometheus(text)
    assert got["v1/all"]["clicks"] == 2
    assert got["v1/all"]["hr@1"] == 0.0 and got["v1/all"]["hr@5"] == 0.5
    assert got["v1/all"]["mrr"] == pytest.approx(0.25)
    assert got["without_list"] == {"clicks": 1}


def test_no_model_yet_exports_no_coverage() -> None:
    metrics = WorkerMetrics()
    metrics.watch_online(OnlineMetrics(), lambda: ("", 0))
    text = generate_latest(metrics.registry).decode()
    assert "streamrec_online_coverage_ratio{" not in text
    assert "streamrec_online_clicks_without_list_total 0.0" in text


def test_a_click_naming_the_held_list_is_attributed_to_it() -> None:
    m = OnlineMetrics()
    m.remember([("u1", ["a", "b"], "L1"), ("u2", ["c"], "L2")], "v1")
    m.observe([("u1", "b", "L1"), ("u2", "c", "L-old"), ("u2", "c", None)])
    c = m.counts[("v1", DEFAULT_ARM)]
    assert (c.clicks, c.attributed, c.on_list) == (3, 1, 3)
    assert c.ratios()["attributed"] == pytest.approx(1 / 3)


def test_a_shown_report_narrows_the_held_list_to_what_was_displayed() -> None:
    from serving.online import Shown

    m = OnlineMetrics()
    m.remember_shown([("u1", Shown(("a", "b", "c", "d"), "v1", "x", "L1", "e", ("p", "q", "p", "q")))])
    assert not m.displayed("u1", "L-other", ["a"])  # not the list the user holds
    assert not m.displayed("u9", "L1", ["a"])
    assert m.displayed("u1", "L1", ["c", "zz", "a", "c"])  # displayed order, its items only
    held = m.lists["u1"]
    assert (held.items, held.teams, held.list_id) == (("c", "a"), ("p", "p"), "L1")
    m.observe([("u1", "b", None)])  # written but not displayed: off the list
    c = m.counts[("v1", "x")]
    assert (c.clicks, c.on_list) == (1, 0)
