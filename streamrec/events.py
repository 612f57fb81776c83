"""The click event schema and its validation (pure).

Wire format: JSON object, Kafka key = UTF-8 user id::

    {"event_id": str, "user_id": str, "item_id": str, "ts": int (epoch ms),
     "list_id": str (optional), ...}

``list_id`` names the list the click came from (the ``list_id`` stored with each list
in Redis and returned by ``GET /recs``): it attributes the click to that list.

Extra fields are allowed and ignored (they stay in the log). Types are strict:
``"ts": "17"`` or ``"ts": true`` are rejected, not coerced.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from streamrec.errors import EventError

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# 1e15 ms is year ~33658: anything larger is a unit mistake (µs or ns).
EpochMs = Annotated[int, msgspec.Meta(ge=0, lt=10**15)]


class ClickEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    event_id: Id
    user_id: Id
    item_id: Id
    ts: EpochMs
    list_id: Id | None = None


_decoder = msgspec.json.Decoder(ClickEvent)
_encoder = msgspec.json.Encoder()


def decode_event(key: bytes | None, value: bytes | None, max_bytes: int) -> ClickEvent:
    """Decode and validate one record; raise :class:`EventError` with a specific reason.

    Every failure, of any kind, is an :class:`EventError`: a record that cannot be
    decoded must be dead-lettered, never crash the agent (it would crash again on
    the same record after every restart).
    """
    event = decode_value(value, max_bytes)
    check_key(key, event.user_id, "user_id", "events must be keyed by user_id")
    return event


def decode_value(value: bytes | None, max_bytes: int) -> ClickEvent:
    """:func:`decode_event` without the key check: for a producer that keys the record
    by the event's ``user_id`` itself (``POST /events``, :mod:`streams.ingest`)."""
    return decode_record(_decoder, value, max_bytes, "event", "empty value (tombstone)")


T = TypeVar("T")


def decode_record(decoder: msgspec.json.Decoder[T], value: bytes | None, max_bytes: int,
                  what: str, tombstone: str) -> T:
    """One JSON record through ``decoder``; every failure an :class:`EventError` whose kind
    names it (``tombstone``, ``too_large``, ``invalid_{what}``, ``malformed_json``, …)."""
    if value is None:
        raise EventError(tombstone, "tombstone")
    if len(value) > max_bytes:
        raise EventError(f"{what} is {len(value)} bytes, limit is {max_bytes}", "too_large")
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as e:
        raise EventError(f"invalid {what}: {e}", f"invalid_{what}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        # msgspec < 0.23 raises UnicodeDecodeError for invalid UTF-8 inside a string, 0.23
        # a DecodeError: the kind comes from our own check, not from the library's wording.
        # framing first: a Schema Registry payload (Avro, or a schema id past 127) is not UTF-8
        framing = _framing(value)
        if framing is not None:
            raise EventError(f"malformed JSON: {framing}", "malformed_json") from None
        raise _utf8_error(value) or EventError(f"malformed JSON: {e}", "malformed_json") from None
    except Exception as e:  # noqa: BLE001 - contract 4: no record may stop the stream
        raise EventError(f"undecodable record: {type(e).__name__}: {e}", "undecodable") from None


def _framing(value: bytes) -> str | None:
    """What wraps a value that is not JSON, where a producer's setting commonly adds it
    (the decoder's own message names only a byte offset), else None."""
    if not value:
        return "the value is empty (0 bytes; a deleted record is a null value, not an empty one)"
    if value.startswith(b"\xef\xbb\xbf"):
        return "the value starts with a UTF-8 byte-order mark, which JSON must not (RFC 8259)"
    if value[0] == 0 and len(value) >= 5:
        schema = int.from_bytes(value[1:5], "big")
        return (f"the value starts with byte 0 and schema id {schema}: Schema Registry's wire "
                "format; send plain JSON (a serializer without the registry)")
    return None


def _utf8_error(value: bytes) -> EventError | None:
    """An ``invalid_utf8`` error when ``value`` is not UTF-8 (JSON must be, RFC 8259), else
    None. Only a record that failed to decode pays for this check."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as e:
        return EventError(f"invalid UTF-8 at byte {e.start}: {e.reason}", "invalid_utf8")
    return None


def check_key(key: bytes | None, expected: str, field: str, rule: str) -> None:
    """The record key must be present and equal to the record's ``field`` (UTF-8)."""
    if key is None:
        raise EventError(f"record has no key; {rule}", "no_key")
    if key != expected.encode():
        raise EventError(f"record key {key[:64]!r} does not match {field} {expected[:64]!r}",
                         "key_mismatch")


def encode_event(event: ClickEvent) -> bytes:
    return _encoder.encode(event)
