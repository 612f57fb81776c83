"""Trending's pure parts: decay, reading the set, the fallback list (serving.trending)."""

from __future__ import annotations

import pytest

from serving.trending import (
    MIN_COUNT,
    clicks_by_item,
    decayed,
    fallback_list,
    parse_top,
    weight,
)

HOUR = 3_600_000


def test_a_click_weighs_half_as_much_each_half_life() -> None:
    assert weight(0, 0, HOUR) == 1.0
    assert weight(2 * HOUR, 0, HOUR) == 4.0
    # decayed count at now = stored score scaled back from the landmark
    assert decayed(weight(2 * HOUR, 0, HOUR), 3 * HOUR, 0, HOUR) == pytest.approx(0.5)
    assert decayed(weight(5 * HOUR, 0, HOUR), 5 * HOUR, 0, HOUR) == pytest.approx(1.0)


def test_recent_clicks_beat_more_older_ones() -> None:
    old = 3 * weight(0, 0, HOUR)  # three clicks four half-lives ago
    new = weight(4 * HOUR, 0, HOUR)  # one click now
    assert new > old
    assert decayed(old, 4 * HOUR, 0, HOUR) == pytest.approx(3 / 16)


def test_parse_top_decodes_decays_and_drops_what_is_history() -> None:
    raw = [(b"a", 8.0), (b"b", 4.0), (b"c", 1.0)]
    t = parse_top(raw, b"0", 3 * HOUR, HOUR)  # scores / 8
    assert t.items == ["a", "b", "c"] and t.counts == pytest.approx([1.0, 0.5, 0.125])
    gone = parse_top(raw, b"0", 14 * HOUR, HOUR)  # 8 / 2**14 < 1/1024
    assert gone.items == [] and 8.0 / 2**14 < MIN_COUNT
    assert parse_top([], None, 0, HOUR).items == []  # nothing counted yet


def test_fallback_is_trending_first_then_popular_without_seen_or_repeats() -> None:
    items, k = fallback_list(["t1", "p1", "t2"], ["p1", "p2", "t2", "p3"], {"t2"}, 4)
    assert items == ["t1", "p1", "p2", "p3"] and k == 2
    items, k = fallback_list([], ["p1", "p2"], set(), 5)
    assert items == ["p1", "p2"] and k == 0
    items, k = fallback_list(["t1", "t2", "t3"], ["p1"], set(), 2)
    assert items == ["t1", "t2"] and k == 2


def test_clicks_are_counted_per_item() -> None:
    assert clicks_by_item(["a", "b", "a"]) == {"a": 2, "b": 1}
