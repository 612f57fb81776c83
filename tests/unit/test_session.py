from streams.session import apply_event, new_session


def test_append_and_seq() -> None:
    s = apply_event(None, "e1", "a", 10, max_len=5, dedup_window=4)
    s = apply_event(s, "e2", "b", 11, max_len=5, dedup_window=4)
    assert s == {"items": ["a", "b"], "ids": ["e1", "e2"], "seq": 2, "last_id": "e2", "last_ts": 11}


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
