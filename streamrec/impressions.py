"""The impression record schema and its validation (pure).

Wire format: JSON object on the impressions topic, Kafka key = UTF-8 user id. Two
kinds share the topic:

* what a worker **wrote** (``STREAMREC_IMPRESSIONS=true``), one record per list::

    {"list_id": str, "user_id": str, "arm": str, "model_version": str,
     "items": [str, ...], "reasons": [str, ...], "ts": int (epoch ms),
     "experiment": str, "teams": [str, ...]}

  (``experiment`` only on an experiment's lists; ``teams`` only on a team-draft list: the
  arm that placed each item)

* what an application **displayed** of a list, reported by the application::

    {"list_id": str, "user_id": str, "shown": [str, ...], "ts": int}

A record has ``items`` or ``shown``, not both. Extra fields are allowed and
ignored; types are strict, as for clicks (:mod:`streamrec.events`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from streamrec.errors import EventError
from streamrec.events import EpochMs, Id, check_key, decode_record

MAX_ITEMS = 1_000
Items = Annotated[list[Id], msgspec.Meta(max_length=MAX_ITEMS)]


class Impression(msgspec.Struct, frozen=True, omit_defaults=True):
    list_id: Id
    user_id: Id
    ts: EpochMs
    items: Items | None = None  # the list as written
    shown: Items | None = None  # what the application displayed of it
    reasons: list[str] | None = None
    arm: str | None = None
    model_version: str | None = None
    experiment: str | None = None  # the experiment the list belongs to
    teams: list[str] | None = None  # a team-draft list: the arm that placed each item


_decoder = msgspec.json.Decoder(Impression)
_encoder = msgspec.json.Encoder()


def decode_impression(key: bytes | None, value: bytes | None, max_bytes: int) -> Impression:
    """Decode and validate one record; every failure an :class:`EventError` whose kind names
    it (``tombstone``, ``too_large``, ``invalid_impression``, ``malformed_json``, …)."""
    imp = decode_record(_decoder, value, max_bytes, "impression", "empty value (tombstone)")
    if (imp.items is None) == (imp.shown is None):
        raise EventError("an impression has either 'items' (written) or 'shown' (displayed)",
                         "invalid_impression")
    check_key(key, imp.user_id, "user_id", "impressions must be keyed by user_id")
    return imp


def encode_impression(imp: Impression) -> bytes:
    return _encoder.encode(imp)
