"""Log resets: a partition whose log begins again below what the worker applied from it.

The offset rule (:mod:`streamrec.session`) drops a record whose offset is at or
below the last one applied for its user from the same partition: that is how a
Kafka redelivery is recognised, however old, even beyond the event-id window.
It holds only while the partition's log is the one those offsets came from. A
log that begins again gives new events offsets at or below the applied ones,
and the rule would drop them all as redeliveries: a broker on memory storage
that restarts, a topic deleted and recreated or restored from a backup, an
unclean leader election that cuts the log short.

So every session also carries the *generation* of the partition's log its
offsets come from (``"g"``, 0 when absent), and the offset rule compares
offsets only within one generation. Per partition, the worker keeps the current
generation and its *high mark*: the highest offset applied from the partition
in that generation (from the records it applies and the sessions it reads),
with the event id at that offset. A record the offset rule would drop is a
redelivery unless the log says it was replaced:

* **the log is shorter than what was applied from it**: the record's event id
  is not among the user's recent ids, and the partition's end offset (the high
  watermark of the last fetch) is at or below the high mark. A redelivered
  record comes from a log that still holds every record applied from it, so
  its end is above the high mark;
* **an applied offset holds another event**: the record is at the high mark,
  or at its user's last applied offset, with a different event id.

Then the partition's generation goes up by one, every session of the earlier
generation is exempt from the offset rule (the event-id window still drops
what a producer sent twice), and the new events are applied. The generation is
kept in the session table itself, in one marker record per partition
(:func:`mark_key`), so it is recovered with the sessions by whichever worker
owns the partition next; a session of a higher generation raises it too.

A reset log that has already grown past the high mark before the worker reads
it again shows neither sign until it reaches the high mark: the records below
are dropped as redeliveries until then, and the reset is logged when it is
found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from streamrec.session import Session, offset_applied

#: the marker records' keys: never a user key (record keys are UTF-8, 0xff never is)
MARK_PREFIX = b"\xffstreamrec-log:"

# reasons, as logged and reported
SHORTER = "the log ends below the high mark"
REPLACED = "an applied offset holds another event"


def mark_key(partition: int) -> bytes:
    """The session-table key of ``partition``'s generation marker."""
    return MARK_PREFIX + str(partition).encode()


def is_mark(key: bytes | None) -> bool:
    return key is not None and key.startswith(MARK_PREFIX)


class Table(Protocol):
    def get(self, key: bytes) -> Session | None: ...


@dataclass(slots=True)
class Mark:
    """One partition: its log generation, and the highest offset applied in it."""

    generation: int = 0
    high: int = -1
    high_id: str | None = None  # the event id at ``high``, where known

    def raise_to(self, offset: int, event_id: str | None) -> None:
        if offset > self.high:
            self.high, self.high_id = offset, event_id

    def saw(self, state: Session, partition: int) -> None:
        """Take in a session read from the table: its offsets may be the highest known, or
        from a later generation than the marker's (a marker lost with its changelog)."""
        if state.get("p") != partition:
            return
        g = state.get("g", 0)
        if g > self.generation:
            self.generation, self.high, self.high_id = g, -1, None
        if g == self.generation:
            self.raise_to(state.get("o", -1), state.get("last_id"))


@dataclass(frozen=True, slots=True)
class LogReset:
    """A reset found: where, the high mark of the generation it ends, what showed it."""

    topic: str
    partition: int
    generation: int  # the new one
    high: int  # the highest offset applied from the earlier log
    offset: int  # the record that showed it
    end: int | None  # the partition's end offset then, if known
    reason: str

    def describe(self) -> str:
        end = "unknown" if self.end is None else str(self.end)
        return (f"log reset on {self.topic}[{self.partition}]: record at offset {self.offset}, "
                f"log end offset {end}, highest offset applied from it {self.high} ({self.reason}); "
                f"applying its events as new (log generation {self.generation})")

    def marker(self) -> Session:
        """The marker record's value (``seq`` orders markers like sessions in the changelog)."""
        return {"seq": self.generation, "g": self.generation, "high": self.high,
                "offset": self.offset, "end": self.end}


def replaced(mark: Mark, state: Session | None, partition: int, offset: int, event_id: str,
             end: int | None) -> str | None:
    """Why the record at ``offset`` shows that ``partition``'s log is not the one ``mark``'s
    generation was applied from, or None when nothing does (pure: the rule above).

    ``state`` is the record's user's session (None: new user), ``end`` the partition's end
    offset (None: unknown; ignored when not above ``offset``, as no log can be).
    """
    if offset == mark.high and mark.high_id is not None and event_id != mark.high_id:
        return REPLACED
    if state is None or not offset_applied(state, partition, offset, mark.generation):
        return None  # not for the offset rule: nothing to tell apart
    if offset == state.get("o") and event_id != state.get("last_id"):
        return REPLACED
    if event_id in state.get("ids", ()):
        return None  # a redelivery the event-id window knows as well
    if end is not None and offset < end <= max(mark.high, state.get("o", -1)):
        return SHORTER
    return None


class LogMarks:
    """The partitions' marks of one worker, read from the table's markers on first use.

    ``forget`` after each assignment: another worker may have found a reset meanwhile.
    """

    def __init__(self) -> None:
        self._marks: dict[int, Mark] = {}
        self.resets = 0  # found by this process

    def get(self, table: Table, partition: int) -> Mark:
        mark = self._marks.get(partition)
        if mark is None:
            stored = table.get(mark_key(partition))
            mark = self._marks[partition] = Mark(stored.get("g", 0) if isinstance(stored, dict) else 0)
        return mark

    def reset(self, mark: Mark, topic: str, partition: int, offset: int, end: int | None,
              reason: str) -> LogReset:
        """Start the next generation of ``partition``'s log."""
        found = LogReset(topic, partition, mark.generation + 1, mark.high, offset, end, reason)
        mark.generation, mark.high, mark.high_id = found.generation, -1, None
        self.resets += 1
        return found

    def forget(self) -> None:
        self._marks.clear()

    def snapshot(self) -> dict[int, Any]:
        """Per partition: generation and high mark (diagnostics, tests)."""
        return {p: (m.generation, m.high) for p, m in sorted(self._marks.items())}
