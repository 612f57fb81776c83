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

from streamrec.events import EpochMs, Id, check_key, decode_record

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
    item = decode_record(_decoder, value, max_bytes, "item",
                         "empty value (tombstone); mark an item unavailable instead")
    check_key(key, item.item_id, "item_id", "items are keyed by item_id")
    return item


def encode_item(item: ItemRecord) -> bytes:
    return _encoder.encode(item)
