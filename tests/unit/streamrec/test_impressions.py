"""Unit tests of :mod:`streamrec.impressions` and the click's optional ``list_id``."""

from __future__ import annotations

import orjson
import pytest

from streamrec.errors import EventError
from streamrec.events import ClickEvent, decode_event, encode_event
from streamrec.impressions import Impression, decode_impression, encode_impression


def test_a_written_list_round_trips() -> None:
    imp = Impression("b1.0", "u1", 1_700_000_000_000, items=["a", "b"], reasons=["sequence"] * 2,
                     arm="all", model_version="v1")
    assert decode_impression(b"u1", encode_impression(imp), 4096) == imp


def test_an_application_reports_what_it_displayed() -> None:
    raw = orjson.dumps({"list_id": "b1.0", "user_id": "u1", "shown": ["a"], "ts": 5, "page": 2})
    imp = decode_impression(b"u1", raw, 4096)
    assert imp.shown == ["a"] and imp.items is None


@pytest.mark.parametrize(("key", "record", "kind"), [
    (b"u1", {"list_id": "L", "user_id": "u1", "ts": 1}, "invalid_impression"),  # neither
    (b"u1", {"list_id": "L", "user_id": "u1", "ts": 1, "items": ["a"], "shown": ["a"]},
     "invalid_impression"),  # both
    (b"u1", {"list_id": "", "user_id": "u1", "ts": 1, "items": ["a"]}, "invalid_impression"),
    (b"u1", {"list_id": "L", "user_id": "u1", "ts": "1", "items": ["a"]}, "invalid_impression"),
    (b"u1", {"list_id": "L", "user_id": "u1", "ts": 1, "items": [1]}, "invalid_impression"),
    (b"u2", {"list_id": "L", "user_id": "u1", "ts": 1, "items": ["a"]}, "key_mismatch"),
    (None, {"list_id": "L", "user_id": "u1", "ts": 1, "items": ["a"]}, "no_key"),
])
def test_bad_impressions_are_refused_with_a_kind(key: bytes | None, record: dict[str, object],
                                                 kind: str) -> None:
    with pytest.raises(EventError) as e:
        decode_impression(key, orjson.dumps(record), 4096)
    assert e.value.kind == kind


def test_a_click_may_name_the_list_it_came_from() -> None:
    raw = orjson.dumps({"event_id": "e", "user_id": "u1", "item_id": "i", "ts": 1, "list_id": "b1.0"})
    assert decode_event(b"u1", raw, 4096).list_id == "b1.0"
    plain = ClickEvent("e", "u1", "i", 1)
    assert plain.list_id is None and b"list_id" not in encode_event(plain)  # optional on the wire
    with pytest.raises(EventError) as e:
        decode_event(b"u1", orjson.dumps({"event_id": "e", "user_id": "u1", "item_id": "i",
                                          "ts": 1, "list_id": 7}), 4096)
    assert e.value.kind == "invalid_event"
