"""The simulator's click model, its detection count, and what the curve counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.simulate import (
    POPULAR,
    SimResult,
    SimSpec,
    SimUsers,
    _draw,
    clicks_needed,
    clicks_needed_seed,
    run,
)
from training.data.synthetic import SyntheticSpec, world

SPEC = SyntheticSpec(users=50, items=60, clusters=6, seed=4)


def test_a_shown_item_is_clicked_more_often_and_more_at_the_top() -> None:
    w = world(SPEC)
    p = w.next_probabilities(0)
    low = int(np.argsort(p)[len(p) // 2])  # an item of middling preference
    rng = np.random.default_rng(0)
    n = 20_000
    plain = sum(_draw(rng, w, 0, {}) == low for _ in range(n)) / n
    top = sum(_draw(rng, w, 0, {low: 4.0}) == low for _ in range(n)) / n
    assert plain == pytest.approx(p[low], abs=0.004)
    want = 4 * p[low] / (1 + 3 * p[low])  # its weight times 4, renormalised
    assert top == pytest.approx(want, abs=0.01)
    assert top > plain


def test_draws_are_seeded() -> None:
    w = world(SPEC)
    a = [_draw(np.random.default_rng(3), w, 5, {1: 2.0}) for _ in range(5)]
    b = [_draw(np.random.default_rng(3), w, 5, {1: 2.0}) for _ in range(5)]
    assert a == b


def test_simulated_users_are_seeded_and_skip_items_outside_their_world() -> None:
    w = world(SPEC)
    spec = SimSpec(users=8, steps=1, warmup=3, top_k=3, seed=2)
    a, b = SimUsers(w, spec, prefix="x-"), SimUsers(w, spec, prefix="x-")
    assert a.histories == b.histories and all(len(h) == 3 for h in a.histories)
    assert a.ids[0] == "x-0"
    # a live list may hold ids the world does not know (new items, fills): they get no
    # boost and are never clicked; the world's items keep the boost of their rank
    clicks_a = [a.click(u, ["new-item", "5", "0", str(SPEC.items + 1)]) for u in range(8)]
    clicks_b = [b.click(u, ["other", "5", "x"]) for u in range(8)]
    assert clicks_a == clicks_b
    assert all(1 <= int(i) <= SPEC.items for i in clicks_a)
    assert [h[-1] for h in a.histories] == clicks_a


def _result(points: list[tuple[int, float]]) -> SimResult:
    r = SimResult("ab", 0)
    r.curve = [{"clicks": c, "p_value": p} for c, p in points]
    return r


def test_clicks_needed_is_where_the_p_value_falls_below_alpha_for_good() -> None:
    one = _result([(10, 0.5), (20, 0.005), (30, 0.2), (40, 0.004), (50, 0.001)])
    two = _result([(10, 0.001), (20, 0.001), (30, 0.001), (40, 0.001), (50, 0.001)])
    assert clicks_needed([one], 0.01) == 40  # the dip at 20 did not last
    assert clicks_needed([one, two], 0.01) == 25  # the median over seeds
    assert clicks_needed([_result([(10, 0.5), (20, 0.02)])], 0.01) is None


def test_a_seed_that_never_gets_there_counts_as_needing_more_than_it_ran() -> None:
    never = _result([(10, 0.5), (20, 0.02), (30, 0.3)])
    early = _result([(10, 0.001), (20, 0.001), (30, 0.001)])
    late = _result([(10, 0.5), (20, 0.001), (30, 0.001)])
    assert clicks_needed_seed(never) is None and clicks_needed_seed(late) == 20
    # one of three short: the median is still the middle seed's count, not "never"
    assert clicks_needed([never, early, late], 0.01) == 20
    # half or more short: the median itself was not reached
    assert clicks_needed([never, early], 0.01) is None
    assert clicks_needed([never, never, late], 0.01) is None
    assert clicks_needed([], 0.01) is None


@pytest.mark.parametrize("mode", ["ab", "interleave"])
def test_both_modes_count_every_click_of_every_user_on_the_curve(tiny_bundle_dir: Path,
                                                                  mode: str) -> None:
    """The detection count compares like with like: in A/B the curve's clicks are both arms'
    together, in interleaving every click (on the list or not), one per user and step."""
    from tests.conftest import TINY

    spec = SimSpec(users=24, steps=3, warmup=2, top_k=5, seed=1, curve_every=1)
    r = run(TINY, {"a": str(tiny_bundle_dir), "b": POPULAR}, mode, spec)
    assert [p["clicks"] for p in r.curve] == list(range(1, 24 * 3 + 1))
    assert sum(r.clicks.values()) == 24 * 3
    if mode == "ab":
        assert set(r.clicks) == {"a", "b"} and min(r.clicks.values()) > 0
    else:
        assert set(r.clicks) == {"interleaved"}
        assert 0 < sum(r.wins.values()) <= 24 * 3
