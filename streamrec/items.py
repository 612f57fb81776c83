"""The item catalogue record schema and its validation (pure).

Topic ``items`` (``STREAMREC_ITEMS_TOPIC``), compacted, **key = UTF-8 item id**,
value = JSON::

    {"item_id": str, "attributes": [str, …], "ts": int (epoch ms),
     "available": bool (optional, default true)}

The latest record of an item is its state: attributes for an item the model
has never seen (the item tower embeds it), and whether it may be recommended.
Extra fields are allowed and ignored. A bad record is dead-lettered like a bad
click (:class:`streamrec.errors.EventError`, kinds below).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from streamrec.errors import EventError
from streamrec.events import EpochMs, Id

MAX_ATTRIBUTES = 64
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class ItemRecord(msgspec.Struct, frozen=True):
    item_id: Id
    ts: EpochMs
    attributes: Annotated[list[Token], msgspec.Meta(max_length=MAX_ATTRIBUTES)] = []
    available: bool = True


_decoder = msgspec.json.Decoder(ItemRecord)
_encoder = msgspec.json.Encoder()


def decode_item(key: bytes | None, value: bytes | None, max_bytes: int) -> ItemRecord:
    """Decode and validate one items-topic record; raise :class:`EventError` saying why."""
    if value is None:
        raise EventError("empty value (tombstone); mark an item unavailable instead", "tombstone")
    if len(value) > max_bytes:
        raise EventError(f"item record is {len(value)} bytes, limit is {max_bytes}", "too_large")
    try:
        item = _decoder.decode(value)
    except msgspec.ValidationError as e:
        raise EventError(f"invalid item: {e}", "invalid_item") from None
    except msgspec.DecodeError as e:
        raise EventError(f"malformed JSON: {e}", "malformed_json") from None
    except Exception as e:  # noqa: BLE001 - no record may stop the listener
        raise EventError(f"undecodable record: {type(e).__name__}: {e}", "undecodable") from None
    if key is None:
        raise EventError("record has no key; items are keyed by item_id", "no_key")
    if key != item.item_id.encode():
        raise EventError(f"record key {key[:64]!r} does not match item_id {item.item_id[:64]!r}",
                         "key_mismatch")
    return item


def encode_item(item: ItemRecord) -> bytes:
    return _encoder.encode(item)
