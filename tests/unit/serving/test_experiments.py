"""Unit tests of :mod:`serving.experiments`: the assignment hash, arms, team draft, the
canary rule; and the report (:mod:`serving.rollout`) on fixed counts."""

from __future__ import annotations

import hashlib
from collections import Counter

import msgspec
import pytest

from serving import experiments as ex
from serving.experiments import Arm, CanaryPolicy, Experiment, assign, bucket, parse_arm, team_draft
from serving.list_types import Ranked
from serving.online import OnlineCounts, OnlineMetrics, Shown
from serving.rollout import format_report, report
from streamrec.errors import ConfigError
from streams.worker import experiment_sums

AB = Experiment("exp1", (Arm("control", "v1", 50), Arm("treatment", "v2", 50)))


def test_the_bucket_is_the_documented_hash() -> None:
    # what another service computes to find a user's arm (docs/operations.md, "Experiments")
    digest = hashlib.sha256(b"exp1:user-42").digest()
    assert bucket("exp1", "user-42") == int.from_bytes(digest[:8], "big") % 10_000
    assert bucket("exp1", "user-42") == 7219  # pinned: changing the hash moves every user
    assert bucket("exp1", "ü") == int.from_bytes(hashlib.sha256("exp1:ü".encode()).digest()[:8],
                                                 "big") % 10_000


def test_arms_take_their_share_of_users_in_order_and_stably() -> None:
    exp = Experiment("split", (Arm("a", "v1", 10), Arm("b", "v2", 30), Arm("c", "v3", 60)))
    got = Counter(assign(exp, f"u{n}").name for n in range(20_000))
    assert got["a"] / 20_000 == pytest.approx(0.10, abs=0.01)
    assert got["b"] / 20_000 == pytest.approx(0.30, abs=0.015)
    assert got["c"] / 20_000 == pytest.approx(0.60, abs=0.015)
    for n in range(100):
        b = bucket("split", f"u{n}")
        want = "a" if b < 1000 else "b" if b < 4000 else "c"
        assert assign(exp, f"u{n}").name == want


def test_the_salt_makes_experiments_split_independently() -> None:
    other = msgspec.structs.replace(AB, name="exp2")
    same = sum(assign(AB, f"u{n}").name == assign(other, f"u{n}").name for n in range(4000))
    assert same / 4000 == pytest.approx(0.5, abs=0.04)
    salted = msgspec.structs.replace(other, salt="exp1")  # same salt: same split
    assert all(assign(AB, f"u{n}") == assign(salted, f"u{n}") for n in range(200))


def test_arm_specs_parse_and_bad_ones_say_why() -> None:
    assert parse_arm("control=v1:50") == Arm("control", "v1", 50)
    assert parse_arm("t=current:25:ranker=off:mmr=0.7") == Arm("t", "current", 25, ranker="off",
                                                               mmr_lambda=0.7)
    assert parse_arm("t=v2:ranker=on").overrides() == "ranker=on"
    for bad, why in [("control", "expected NAME=VERSION"), ("c=", "expected"),
                     ("c=v1:half", "cannot read 'half'"), ("c=v1:ranker=maybe", "ranker=maybe")]:
        with pytest.raises(ConfigError, match=why):
            parse_arm(bad)


@pytest.mark.parametrize(("exp", "why"), [
    (Experiment("x", (Arm("a", "v1", 50),)), "at least two arms"),
    (Experiment("x", (Arm("a", "v1", 50), Arm("a", "v2", 50))), "must differ"),
    (Experiment("x", (Arm("a", "v1", 40), Arm("b", "v2", 50))), "sum to 100"),
    (Experiment("x", (Arm("a", "v1", 100), Arm("b", "v2", 0))), "at least 1"),
    (Experiment("x y", (Arm("a", "v1", 50), Arm("b", "v2", 50))), "experiment name"),
    (Experiment("x", (Arm("a", "v1"), Arm("b", "v2"), Arm("c", "v3")), ex.INTERLEAVE), "exactly two"),
    (Experiment("x", (Arm("a", "v1", 50), Arm("b", "v2", 50, mmr_lambda=2.0))), "mmr"),
    (Experiment("x", (Arm("a", "v1", 50), Arm("b", "v2", 50)), "bandit"), "mode"),
    (Experiment("x", (Arm("a", "v1", 50), Arm("b", "v2", 50)),
                canary=CanaryPolicy(min_clicks=10, max_clicks=5)), "canary policy"),
])
def test_malformed_experiments_are_refused(exp: Experiment, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        ex.check(exp)


def test_interleaving_ignores_weights() -> None:
    exp = Experiment("x", (Arm("a", "v1"), Arm("b", "v2")), ex.INTERLEAVE)
    assert ex.check(exp) is exp


def test_the_record_round_trips_and_the_last_one_per_name_is_the_state() -> None:
    assert ex.decode(ex.encode(AB)) == AB
    stopped = msgspec.structs.replace(AB, state=ex.STOPPED, decision="stopped")
    later = Experiment("exp2", AB.arms, started_at=5)
    assert ex.latest([AB, later, stopped]) == {"exp1": stopped, "exp2": later}
    assert ex.running([AB, later, stopped]) == later
    assert ex.running([AB, stopped]) is None


def _r(items: str, reason: str = "sequence") -> Ranked:
    return Ranked(list(items), [float(-n) for n in range(len(items))], "model",
                  [reason] * len(items))


def test_team_draft_alternates_credits_and_skips_items_already_placed() -> None:
    out = team_draft({"a": _r("pqrs"), "b": _r("qxyz")}, 6, seed="s")
    items, teams = out.ranked.items, out.teams
    assert len(items) == len(set(items)) == 6
    # each arm places in turn: after every second pick, the counts are equal
    for n in range(2, 7, 2):
        assert Counter(teams[:n]) == {"a": n // 2, "b": n // 2}
    for item, team in zip(items, teams, strict=True):  # each item is from its team's list
        assert item in {"a": "pqrs", "b": "qxyz"}[team]
    # an arm picks its best item not yet placed: the order within a team is its own
    assert [i for i, t in zip(items, teams, strict=True) if t == "a"] == \
        [i for i in "pqrs" if i in [x for x, t in zip(items, teams, strict=True) if t == "a"]]


def test_team_draft_is_seeded_and_fair_over_seeds() -> None:
    lists = {"a": _r("pqrs"), "b": _r("wxyz")}
    assert team_draft(lists, 4, "u1:3") == team_draft(lists, 4, "u1:3")
    first = Counter(team_draft(lists, 4, f"u{n}").teams[0] for n in range(2000))
    assert first["a"] / 2000 == pytest.approx(0.5, abs=0.04)


def test_team_draft_fills_from_the_other_arm_when_one_runs_out() -> None:
    out = team_draft({"a": _r("p"), "b": _r("wxyz")}, 4, "s")
    assert sorted(out.ranked.items) == ["p", "w", "x", "y"]
    assert out.teams.count("a") == 1
    identical = team_draft({"a": _r("pqr"), "b": _r("pqr")}, 3, "s")
    assert identical.ranked.items == ["p", "q", "r"]


def test_a_click_on_a_team_draft_list_is_a_win_for_the_team_that_placed_it() -> None:
    m = OnlineMetrics()
    m.remember_shown([("u1", Shown(("p", "w", "q"), "v1|v2", ex.INTERLEAVED_ARM, "L1", "x",
                                   ("a", "b", "a"))),
                      ("u2", Shown(("w", "p"), "v1|v2", ex.INTERLEAVED_ARM, "L2", "x", ("b", "a")))])
    batch = m.observe([("u1", "w", None), ("u2", "w", None), ("u2", "zzz", None), ("u1", "q", None)])
    assert batch.wins == {("x", "b"): 2, ("x", "a"): 1}
    assert batch.arms[("x", ex.INTERLEAVED_ARM)].clicks == 4
    sums = experiment_sums(batch)
    assert sums["x"]["b:wins"] == 2 and sums["x"]["a:wins"] == 1
    assert sums["x"]["interleaved:clicks"] == 4 and sums["x"]["interleaved:hits@1"] == 1


def test_clicks_on_lists_of_no_experiment_add_nothing_to_experiments() -> None:
    m = OnlineMetrics()
    m.remember([("u1", ["a"], None)], "v1")
    assert m.observe([("u1", "a", None)]).arms == {}


def test_canary_waits_then_promotes_a_good_one_and_rolls_back_a_bad_one() -> None:
    p = CanaryPolicy(margin=0.01, confidence=0.95, min_clicks=1000, max_clicks=5000)
    assert ex.canary_decision((100, 999), (100, 5000), p).action == ex.WAIT
    assert ex.canary_decision((1000, 4000), (1040, 4000), p).action == ex.PROMOTE
    bad = ex.canary_decision((200, 2000), (20, 2000), p)
    assert bad.action == ex.ROLLBACK and "worse" in bad.why
    assert ex.canary_decision((200, 2000), (180, 2000), p).action == ex.WAIT  # undecided
    late = ex.canary_decision((1000, 5000), (920, 5000), p)
    assert late.action == ex.ROLLBACK and "undecided after 5000" in late.why


def _counts(clicks: int, hits10: int, gain: float) -> OnlineCounts:
    c = OnlineCounts(clicks=clicks)
    c.hits = {1: hits10 // 2, 5: hits10, 10: hits10, 20: hits10}
    c.on_list, c.ndcg10, c.ndcg10_sq, c.reciprocal_rank = hits10, gain * hits10, gain * gain * hits10, 0.0
    return c


def test_the_report_tests_each_arm_against_control() -> None:
    r = report(AB, {"control": _counts(1000, 100, 0.5), "treatment": _counts(1000, 150, 0.5)}, {})
    control, treatment = r["arms"]
    assert control["hr@10"] == 0.1 and treatment["hr@10"] == 0.15
    lo, hi = treatment["hr@10_interval"]
    assert lo < 0.15 < hi
    (t,) = r["tests"]
    assert t["arm"] == "treatment" and t["against"] == "control"
    assert t["hr@10_difference"] == pytest.approx(0.05) and t["p_value"] < 0.01
    assert "treatment vs control: HR@10 +0.0500" in format_report(r)


def test_the_interleaving_report_counts_wins_with_a_sign_test() -> None:
    exp = Experiment("x", (Arm("a", "v1"), Arm("b", "v2")), ex.INTERLEAVE)
    r = report(exp, {ex.INTERLEAVED_ARM: _counts(100, 60, 0.5)}, {"a": 40, "b": 20})
    i = r["interleaving"]
    assert i["wins"] == {"a": 40, "b": 20} and i["ties"] == 40
    assert i["sign_test_p"] < 0.02
    assert "wins a 40 / b 20" in format_report(r)


def test_an_experiment_record_reads_as_one_on_the_model_updates_topic() -> None:
    from serving.registry import Announcement, decode_or_none, decode_update, encode_announcement

    assert decode_update(ex.encode(AB)) == AB  # "kind" is always encoded
    assert decode_or_none(ex.encode(AB)) is None  # not a model announcement
    a = Announcement("v1", "file:///x", "0" * 64, 1)
    assert decode_update(encode_announcement(a)) == a
    assert decode_update(b'{"kind": "experiment", "name": "x"}') is None  # malformed: logged


def test_an_arm_changes_only_the_funnel_settings_it_names() -> None:
    from serving.funnel import FunnelConfig
    from serving.rerank import RerankConfig

    base = FunnelConfig(top_n=10, rules=RerankConfig(mmr_lambda=0.8), ranking="auto")
    assert base.with_overrides() is base
    off = base.with_overrides(ranking="off")
    assert (off.ranking, off.rules.mmr_lambda, off.top_n) == ("off", 0.8, 10)
    flat = base.with_overrides(mmr_lambda=1.0)
    assert (flat.ranking, flat.rules.mmr_lambda) == ("auto", 1.0)
    arm = parse_arm("t=v2:50:ranker=off:mmr=0.5")
    both = base.with_overrides(arm.ranker, arm.mmr_lambda)
    assert (both.ranking, both.rules.mmr_lambda) == ("off", 0.5)
