"""Unit tests of :mod:`streamrec.session`."""

from __future__ import annotations

from streamrec.session import apply_event, new_session


def test_append_and_seq() -> None:
    s = apply_event(None, "e1", "a", 10, max_len=5, dedup_window=4)
    s = apply_event(s, "e2", "b", 11, max_len=5, dedup_window=4)
    assert s == {"items": ["a", "b"], "ids": ["e1", "e2"], "seq": 2, "last_id": "e2", "last_ts": 11,
                 "p": -1, "o": -1}


def test_duplicate_event_leaves_state_unchanged() -> None:
    s = apply_event(None, "e1", "a", 10, 5, 4)
    assert apply_event(s, "e1", "a", 10, 5, 4) is None
    assert apply_event(s, "e1", "zzz", 99, 5, 4) is None  # same id, different payload: still a dup


def test_max_len_keeps_most_recent_items() -> None:
    s = None
    for i in range(8):
        s = apply_event(s, f"e{i}", f"i{i}", i, max_len=3, dedup_window=100)
    assert s is not None and s["items"] == ["i5", "i6", "i7"] and s["seq"] == 8


def test_dedup_window_is_bounded() -> None:
    s = None
    for i in range(6):
        s = apply_event(s, f"e{i}", "x", i, max_len=10, dedup_window=2)
    assert s is not None and s["ids"] == ["e4", "e5"]
    assert apply_event(s, "e5", "x", 0, 10, 2) is None
    assert apply_event(s, "e0", "x", 0, 10, 2) is not None  # outside the window: applied again


def test_input_state_is_not_mutated() -> None:
    s = new_session()
    apply_event(s, "e1", "a", 1, 5, 5)
    assert s == new_session()


def test_kafka_redelivery_is_a_duplicate_however_old() -> None:
    # a worker died after applying offsets 0..9 but before committing: they come again,
    # long past the 2-id window, and must not be applied twice
    s = None
    for off in range(10):
        s = apply_event(s, f"e{off}", "x", off, max_len=10, dedup_window=2, partition=3, offset=off)
    assert s is not None and (s["p"], s["o"], s["seq"]) == (3, 9, 10)
    assert apply_event(s, "e0", "x", 0, 10, 2, partition=3, offset=0) is None
    assert apply_event(s, "e9", "x", 9, 10, 2, partition=3, offset=9) is None
    nxt = apply_event(s, "e10", "x", 10, 10, 2, partition=3, offset=10)
    assert nxt is not None and nxt["seq"] == 11
    # another partition's offsets say nothing (the producer re-keyed): ids decide
    assert apply_event(s, "e0", "x", 0, 10, 2, partition=4, offset=0) is not None

