"""Applying one micro-batch of raw records to session state (pure, no I/O).

The table is any ``MutableMapping[bytes, Session]``: the Faust table in a
worker, a dict in unit tests. Values are always reassigned, never mutated in
place, because only assignment reaches the changelog.
"""

from __future__ import annotations

import base64
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

import orjson

from serving.store import Provenance
from streamrec.errors import EventError
from streams.events import decode_event
from streams.session import Session, apply_event


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record and where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str

    def encode(self, worker_id: str) -> bytes:
        """The dead-letter value: reason, origin, and the original bytes (nothing is lost)."""
        r = self.record
        return orjson.dumps({
            "reason": self.reason,
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "key": None if r.key is None else r.key.decode("utf-8", "replace"),
            "value_b64": None if r.value is None else base64.b64encode(r.value).decode(),
            "failed_at": int(time.time() * 1000),
            "worker": worker_id,
        })


@dataclass(slots=True)
class BatchOutcome:
    """What a batch did: users to recompute, dead letters, and counts."""

    touched: dict[str, Provenance] = field(default_factory=dict)
    histories: dict[str, list[str]] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    applied_ts: list[int] = field(default_factory=list)
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class BatchRules:
    max_len: int
    dedup_window: int
    max_event_bytes: int


def apply_batch(table: MutableMapping[bytes, Session], records: Sequence[Record],
                rules: BatchRules) -> BatchOutcome:
    """Validate each record, apply valid ones in order, collect the touched users.

    Each touched user's state is assigned to the table once, after the batch, so a
    user with several events in a batch costs one changelog record, not several.
    """
    out = BatchOutcome()
    changed: dict[bytes, Session] = {}
    for rec in records:
        try:
            ev = decode_event(rec.key, rec.value, rules.max_event_bytes)
        except EventError as e:
            out.dead.append(DeadLetter(rec, e.reason))
            continue
        key = rec.key
        assert key is not None  # decode_event checked it
        state = changed[key] if key in changed else table.get(key)
        new = apply_event(state, ev.event_id, ev.item_id, ev.ts, rules.max_len, rules.dedup_window)
        if new is None:
            out.duplicates += 1
            if state is not None and state["last_id"] == ev.event_id and ev.user_id not in out.touched:
                # A redelivery of the user's latest event: the worker that applied it may
                # have died before its list reached Redis, so compute the list again
                # (same provenance; the store accepts an equal (ts, seq) write).
                out.touched[ev.user_id] = Provenance(ev.user_id, state["seq"], ev.event_id,
                                                     state["last_ts"])
                out.histories[ev.user_id] = state["items"]
            continue
        changed[key] = new
        out.applied_ts.append(ev.ts)
        out.touched[ev.user_id] = Provenance(ev.user_id, new["seq"], ev.event_id, ev.ts)
        out.histories[ev.user_id] = new["items"]
    for key, state in changed.items():
        table[key] = state
    return out
