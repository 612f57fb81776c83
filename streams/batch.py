"""Applying one micro-batch of raw records to session state (pure, no I/O).

The table is any :class:`Sessions`: the Faust ``SessionTable`` in a worker, a
dict-backed one in unit tests. Values are always reassigned with ``put``, never
mutated in place, because only assignment reaches the changelog; ``put`` gets
the partition the record was consumed from, so state lives where its events
do whatever partitioner the producer used (``streams.tables``).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from serving.list_types import Provenance
from streamrec.errors import EventError
from streamrec.events import decode_event
from streamrec.session import Session, SessionRules, apply_event, offset_applied
from streams.log_resets import LogMarks, LogReset, mark_key, replaced


class Sessions(Protocol):
    @property
    def persistent(self) -> bool:
        """State survives the process (a disk store): it may be ahead of the changelog."""

    def get(self, key: bytes) -> Session | None: ...

    def put(self, key: bytes, value: Session, partition: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record and where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    # The record's own timestamp in seconds (as the producer or broker set it, as Faust
    # gives it) and headers, kept for its dead letter: None / () where there are none.
    timestamp_s: float | None = None
    headers: Any = ()


# The longest original key a dead letter is keyed by; a longer one is replaced by its hash.
LETTER_KEY_MAX = 4096
# Room left in a dead letter for everything but the original bytes (reason, origin, hashes).
_LETTER_OVERHEAD = 6144
# Of that room, what the original record's headers may take (base64 included); larger
# headers are left out of the letter and ``headers_truncated`` says so.
_HEADERS_ROOM = 2048


def _header_pairs(headers: Any) -> list[tuple[str, bytes | None]]:
    """Kafka headers as (name, value) pairs, from the shapes clients give: a mapping, or a
    sequence of pairs; a name given as bytes is decoded."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for name, value in items:
        if isinstance(name, bytes | bytearray):
            name = bytes(name).decode("utf-8", "replace")
        if isinstance(value, str):
            value = value.encode()
        pairs.append((str(name), None if value is None else bytes(value)))
    return pairs


def _letter_headers(headers: Any) -> tuple[list[dict[str, str | None]], bool]:
    """The record's headers for its dead letter, and whether they were left out for size."""
    out: list[dict[str, str | None]] = []
    size = 0
    for name, value in _header_pairs(headers):
        entry = {"key": name, "value_b64": None if value is None else base64.b64encode(value).decode()}
        size += len(orjson.dumps(entry)) + 1  # as written: escapes and the comma included
        if size > _HEADERS_ROOM:
            return [], True
        out.append(entry)
    return out, False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str
    kind: str = "invalid_event"  # EventError.kind: a fixed name, for metrics

    @property
    def key(self) -> bytes | None:
        """The letter's record key: the original's, so a user's letters share a partition,
        or, for a key over :data:`LETTER_KEY_MAX` bytes (which would take the letter past
        what the broker accepts), its sha256 in hex."""
        k = self.record.key
        if k is not None and len(k) > LETTER_KEY_MAX:
            return hashlib.sha256(k).hexdigest().encode()
        return k

    def encode(self, worker_id: str, max_bytes: int = 262_144) -> bytes:
        """The dead-letter value: reason, origin, the original bytes, their size and sha256.

        A letter stays under ``max_bytes`` (the broker refuses records over its
        ``message.max.bytes``, and a dead letter that cannot be sent would stop the
        partition): when the original key and value do not fit, they are cut,
        ``truncated`` is true, and ``value_bytes``/``value_sha256`` still identify
        the original record, which also stays in the source topic at its offset.
        """
        r = self.record
        room = max(0, (max_bytes - _LETTER_OVERHEAD) * 3 // 4)  # base64 grows 4/3
        key = r.key[: min(len(r.key), 1024, room)] if r.key is not None else None
        value = r.value[: max(0, room - len(key or b""))] if r.value is not None else None
        headers, headers_cut = _letter_headers(r.headers)
        reason = self.reason[:1024]
        failed_at = int(time.time() * 1000)
        size = None if r.value is None else len(r.value)  # of the whole original, once
        digest = None if r.value is None else hashlib.sha256(r.value).hexdigest()
        # The first cut is an estimate: JSON escapes a control character in six bytes, so a
        # reason, key or header of them can be larger than it looks. The letter is measured
        # and cut further until it fits: the value, then the key, the headers, the reason.
        while True:
            letter = orjson.dumps({
                "reason": reason,
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": None if r.timestamp_s is None or r.timestamp_s < 0 else round(r.timestamp_s * 1000),
                "headers": headers,
                "headers_truncated": headers_cut,
                "key": None if key is None else key.decode("utf-8", "replace"),
                "key_b64": None if key is None else base64.b64encode(key).decode(),
                "value_b64": None if value is None else base64.b64encode(value).decode(),
                "value_bytes": size,
                "value_sha256": digest,
                "truncated": (key is not None and len(key) != len(r.key or b""))
                or (value is not None and len(value) != len(r.value or b"")),
                "failed_at": failed_at,
                "worker": worker_id[:256],
            })
            excess = len(letter) - max_bytes
            if excess <= 0:
                return letter
            if value:
                value = value[: max(0, len(value) - (excess * 3 // 4 + 3))]
            elif key:
                key = key[: len(key) // 2]
            elif headers:
                headers, headers_cut = [], True
            elif len(reason) > 64:
                reason = reason[: len(reason) // 2]
            else:  # only the origin and the fixed fields are left: a limit below their size
                return letter


@dataclass(slots=True)
class BatchOutcome:
    """What a batch did: users to recompute, dead letters, and counts."""

    touched: dict[str, Provenance] = field(default_factory=dict)
    histories: dict[str, list[str]] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    applied_ts: list[int] = field(default_factory=list)
    clicked: list[str] = field(default_factory=list)  # item of each applied event (trending)
    clickers: list[str] = field(default_factory=list)  # user of each applied event, in step
    click_lists: list[str | None] = field(default_factory=list)  # the list_id each names, in step
    duplicates: int = 0
    epoch: int = 0  # the fencing epoch current when the batch was applied (streams.fencing)
    resets: list[LogReset] = field(default_factory=list)  # log resets found (streams.log_resets)


# (topic, partition) -> the partition's end offset (high watermark), None if unknown
EndOffsets = Callable[[str, int], int | None]


def redelivered(state: Session, rec: Record, generation: int = 0) -> bool:
    """Whether ``rec`` is a Kafka redelivery of an event ``state`` has applied (the offset rule)."""
    return offset_applied(state, rec.partition, rec.offset, generation)


def apply_batch(table: Sessions, records: Sequence[Record], rules: SessionRules,
                epoch: int = 0, marks: LogMarks | None = None,
                end_offset: EndOffsets | None = None) -> BatchOutcome:
    """Validate each record, apply valid ones in order, collect the touched users.

    Each touched user's state is assigned to the table once, after the batch, so a
    user with several events in a batch costs one changelog record, not several.

    ``marks`` are the partitions' log generations and high marks, ``end_offset`` their
    end offsets: a record that shows its partition's log began again below what was
    applied from it starts the partition's next generation (:mod:`streams.log_resets`),
    and the batch is applied again from its first record under it, so none of the new
    log's events is taken for a redelivery.
    """
    marks = marks if marks is not None else LogMarks()
    known: dict[tuple[str, int], int | None] = {}  # each partition's end, read once a batch

    def ends(topic: str, partition: int) -> int | None:
        if (topic, partition) not in known:
            known[topic, partition] = end_offset(topic, partition) if end_offset else None
        return known[topic, partition]

    resets: list[LogReset] = []
    partitions = len({r.partition for r in records})
    while True:
        # a reset is found at most once per partition (a new generation has no high
        # mark yet, and a batch's offsets only grow); the last pass looks for none
        out = _apply(table, records, rules, epoch, marks, ends, resets,
                     detect=len(resets) < partitions)
        if out is None:  # a reset: apply the batch again under the new generation
            continue
        for r in resets:
            table.put(mark_key(r.partition), r.marker(), r.partition)
        out.resets = resets
        return out


def _apply(table: Sessions, records: Sequence[Record], rules: SessionRules, epoch: int,
           marks: LogMarks, ends: EndOffsets, resets: list[LogReset],
           detect: bool) -> BatchOutcome | None:
    """One pass of :func:`apply_batch`; None where it found a log reset (added to ``resets``)
    and stopped, nothing of the batch kept."""
    out = BatchOutcome(epoch=epoch)
    changed: dict[bytes, tuple[Session, int]] = {}
    for rec in records:
        try:
            ev = decode_event(rec.key, rec.value, rules.max_event_bytes)
        except EventError as e:
            out.dead.append(DeadLetter(rec, e.reason, e.kind))
            continue
        key = rec.key
        assert key is not None  # decode_event checked it
        mark = marks.get(table, rec.partition)
        state: Session | None
        if key in changed:
            state = changed[key][0]
        else:
            state = table.get(key)
            if state is not None:
                mark.saw(state, rec.partition)
        why = replaced(mark, state, rec.partition, rec.offset, ev.event_id,
                       ends(rec.topic, rec.partition)) if detect else None
        if why is not None:
            resets.append(marks.reset(mark, rec.topic, rec.partition, rec.offset,
                                      ends(rec.topic, rec.partition), why))
            return None
        new = apply_event(state, ev.event_id, ev.item_id, ev.ts, rules.max_len, rules.dedup_window,
                          rec.partition, rec.offset, mark.generation)
        if new is None:
            out.duplicates += 1
            if (table.persistent and state is not None and key not in changed
                    and redelivered(state, rec, mark.generation)):
                # Kafka redelivers what was applied but not committed. With a disk store,
                # the session that applied it may never have reached the changelog (the
                # write survived a kill -9 that lost the buffered changelog send): send
                # it again before these offsets are committed. (In memory, state after a
                # start comes from the changelog, so it is there already.)
                changed[key] = (state, rec.partition)
            if state is not None and state["last_id"] == ev.event_id and ev.user_id not in out.touched:
                # A redelivery of the user's latest event: the worker that applied it may
                # have died before its list reached Redis, so compute the list again
                # (same provenance; the store accepts an equal (epoch, seq) write).
                out.touched[ev.user_id] = Provenance(ev.user_id, state["seq"], ev.event_id,
                                                     state["last_ts"])
                out.histories[ev.user_id] = state["items"]
            continue
        changed[key] = (new, rec.partition)
        mark.raise_to(rec.offset, ev.event_id)
        out.applied_ts.append(ev.ts)
        out.clicked.append(ev.item_id)
        out.clickers.append(ev.user_id)
        out.click_lists.append(ev.list_id)
        out.touched[ev.user_id] = Provenance(ev.user_id, new["seq"], ev.event_id, ev.ts)
        out.histories[ev.user_id] = new["items"]
    for key, (state, partition) in changed.items():
        table.put(key, state, partition)
    return out
