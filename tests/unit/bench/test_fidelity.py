"""The fidelity check's pure parts: HR@10, the user draw, and each difference's cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fidelity import (
    FALLBACK,
    INDEX,
    REORDER,
    RULE,
    SEEN_DEPTH,
    STALE,
    TIES,
    UNEXPLAINED,
    FidelityReport,
    Online,
    classify,
    classify_offline,
    hit_rate,
    pick_users,
)

OFF = [f"i{n}" for n in range(20)]


def model(items: list[str], event: str = "e9", reasons: list[str] | None = None) -> Online:
    return Online(items, "model", reasons or ["sequence"] * len(items), event)


def test_hit_rate_counts_targets_in_the_first_ten_only() -> None:
    lists = [OFF, OFF, OFF, []]
    assert hit_rate(lists, ["i0", "i9", "i10", "i0"]) == pytest.approx(0.5)
    assert hit_rate([], []) == 0.0
    with pytest.raises(ValueError, match="2 lists for 1 targets"):
        hit_rate([OFF, OFF], ["i0"])


def test_pick_users_is_seeded_distinct_and_bounded() -> None:
    a = pick_users(100, 10, seed=3)
    assert a == pick_users(100, 10, seed=3) and a != pick_users(100, 10, seed=4)
    assert len(set(a)) == 10 and a == sorted(a) and all(0 <= x < 100 for x in a)
    with pytest.raises(ValueError, match="more than the 5 users"):
        pick_users(5, 6, 0)


def test_identical_lists_have_no_cause() -> None:
    assert classify(model(OFF), "e9", OFF) is None


def test_a_list_behind_the_last_event_is_stale_and_a_missing_one_too() -> None:
    assert classify(model(OFF[::-1], event="e3"), "e9", OFF) == STALE
    assert classify(None, "e9", OFF) == STALE


def test_fallback_lists_are_named_by_their_source() -> None:
    fb = Online(OFF[::-1], "trending", ["trending"] * 20, "e9")
    assert classify(fb, "e9", OFF) == FALLBACK


def test_the_session_depth_explains_a_list_equal_to_the_truncated_history_one() -> None:
    other = OFF[1:] + ["x"]
    assert classify(model(other), "e9", OFF, truncated=other) == SEEN_DEPTH
    assert classify(model(other), "e9", OFF, truncated=OFF[::-1]) == UNEXPLAINED


def test_a_rule_is_found_by_recomputing_with_it_or_by_the_reason_codes() -> None:
    other = OFF[::-1]
    assert classify(model(other), "e9", OFF, with_rules=other) == RULE
    pinned = model(other, reasons=["sequence", "pinned"] + ["sequence"] * 18)
    assert classify(pinned, "e9", OFF) == RULE
    assert classify(model(other), "e9", OFF) == UNEXPLAINED


def test_offline_funnel_against_the_evaluator() -> None:
    ev = OFF[:10]
    assert classify_offline(OFF, ev, exact_index=True, reorders=False, tied=False) is None
    swapped = [ev[1], ev[0], *ev[2:]]
    assert classify_offline(swapped, ev, exact_index=True, reorders=True, tied=False) == REORDER
    assert classify_offline(swapped, ev, exact_index=False, reorders=False, tied=False) == INDEX
    assert classify_offline(swapped, ev, exact_index=True, reorders=False, tied=True) == TIES
    assert classify_offline(swapped, ev, exact_index=True, reorders=False, tied=False) == UNEXPLAINED


def test_report_rows_and_dict() -> None:
    r = FidelityReport(users=4, identical=3, online_hr10=0.5, offline_hr10=0.25, funnel_hr10=0.5,
                       online_vs_offline_funnel={RULE: 1}, funnel_vs_evaluator={})
    d = r.as_dict()
    assert d["identical_share"] == 0.75 and d["hr10_diff"] == pytest.approx(0.25)
    rows = r.rows()
    assert "identical lists 3 (75.00%)" in rows[0] and "+0.2500" in rows[1]
    assert rows[2].endswith(f"{RULE} 1") and rows[3].endswith("none")


def test_the_command_rejects_a_missing_bundle_or_data_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    got = runner.invoke(app, ["fidelity", "--bundle", str(tmp_path), "--data", "x.txt"])
    assert got.exit_code == 2 and "is not a bundle" in got.output
    (tmp_path / "manifest.json").write_text("{}")
    got = runner.invoke(app, ["fidelity", "--bundle", str(tmp_path), "--data", str(tmp_path / "no.txt")])
    assert got.exit_code == 2 and "no such file" in got.output
