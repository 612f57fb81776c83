"""Unit tests of :mod:`streamrec.events`."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from streamrec.errors import EventError
from streamrec.events import ClickEvent, decode_event, decode_record, encode_event

MAX = 1024


def raw(**fields: object) -> bytes:
    base: dict[str, object] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1700000000000}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_valid_event_with_extra_fields_decodes() -> None:
    ev = decode_event(b"u1", raw(referrer="home", price=3.5), MAX)
    assert ev == ClickEvent("e1", "u1", "i1", 1700000000000)


def test_round_trip() -> None:
    ev = ClickEvent("e", "u", "i", 5)
    assert decode_event(b"u", encode_event(ev), MAX) == ev


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"u1", b"{oops", "malformed JSON"),
        (b"u1", b"[1, 2]", "invalid event"),
        (b"u1", raw(item_id=...), "missing required field `item_id`"),
        (b"u1", raw(ts="1700000000000"), "Expected `int`, got `str` - at `$.ts`"),
        (b"u1", raw(ts=True), "Expected `int`, got `bool` - at `$.ts`"),
        (b"u1", raw(ts=-5), "Expected `int` >= 0 - at `$.ts`"),
        (b"u1", raw(item_id=42), "Expected `str`, got `int` - at `$.item_id`"),
        (b"u1", raw(event_id=""), "length >= 1 - at `$.event_id`"),
        (b"u1", None, "tombstone"),
        (None, raw(), "no key"),
        (b"u2", raw(), "does not match user_id"),
        (b"u1", raw(pad="x" * MAX), f"limit is {MAX}"),
    ],
)
def test_bad_events_raise_specific_reason(key: bytes | None, value: bytes | None, reason: str) -> None:
    with pytest.raises(EventError) as e:
        decode_event(key, value, MAX)
    assert reason in e.value.reason



@pytest.mark.parametrize(("key", "value", "kind"), [
    (b"u1", None, "tombstone"),
    (b"u1", b"x" * 5000, "too_large"),
    (b"u1", b"{not json", "malformed_json"),
    (b"u1", b'{"event_id":"\xff\xfe","user_id":"u1","item_id":"i","ts":1}', "invalid_utf8"),
    (b"u1", b'{"event_id":"e","user_id":"u1","item_id":"i","ts":"soon"}', "invalid_event"),
    (None, b'{"event_id":"e","user_id":"u1","item_id":"i","ts":1}', "no_key"),
    (b"u2", b'{"event_id":"e","user_id":"u1","item_id":"i","ts":1}', "key_mismatch"),
])
def test_every_refusal_has_a_fixed_kind_for_metrics(key: bytes | None, value: bytes | None,
                                                    kind: str) -> None:
    with pytest.raises(EventError) as e:
        decode_event(key, value, 4096)
    assert e.value.kind == kind


class _RaisesLikeMsgspec:
    """A decoder that fails on invalid UTF-8 the way one msgspec release does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def decode(self, value: bytes) -> object:
        raise self.error


BAD_UTF8 = b'{"event_id":"\xff\xfe","user_id":"u1","item_id":"i","ts":1}'


@pytest.mark.parametrize("error", [
    UnicodeDecodeError("utf-8", BAD_UTF8, 13, 14, "invalid start byte"),  # msgspec < 0.23
    msgspec.DecodeError("Invalid UTF-8 encoded string"),  # msgspec 0.23
], ids=["unicode_decode_error", "decode_error"])
def test_invalid_utf8_has_one_kind_whatever_the_decoder_raises(error: Exception) -> None:
    with pytest.raises(EventError) as e:
        decode_record(_RaisesLikeMsgspec(error), BAD_UTF8, 4096, "event", "tombstone")  # type: ignore[arg-type]
    assert e.value.kind == "invalid_utf8"
    assert "byte 13" in e.value.reason


def test_malformed_json_that_is_valid_utf8_stays_malformed_json() -> None:
    error = msgspec.DecodeError("Input data was truncated")
    with pytest.raises(EventError) as e:
        decode_record(_RaisesLikeMsgspec(error), '{"é": '.encode(), 4096, "event", "tombstone")  # type: ignore[arg-type]
    assert e.value.kind == "malformed_json"


@pytest.mark.parametrize(("value", "says"), [
    (b"", "the value is empty"),
    (b'\xef\xbb\xbf{"event_id": "e", "user_id": "u1", "item_id": "i", "ts": 1}', "byte-order mark"),
    (b'\x00\x00\x00\x00\x07{"event_id": "e", "user_id": "u1", "item_id": "i", "ts": 1}',
     "schema id 7: Schema Registry's wire format"),
    (b"\x00\x00\x01\x86\xa1\x02\x80\xff\x0cclicks",  # id 100001 and an Avro body: not UTF-8
     "schema id 100001: Schema Registry's wire format"),
])
def test_a_wrapped_value_says_what_wraps_it(value: bytes, says: str) -> None:
    """A byte-order mark, Schema Registry framing or an empty value is named, where the
    decoder's own message gave only a byte offset."""
    with pytest.raises(EventError) as e:
        decode_event(b"u1", value, 4096)
    assert e.value.kind == "malformed_json"
    assert says in e.value.reason
