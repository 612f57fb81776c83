"""Unit tests of :mod:`streams.log_resets` and the offset rule across log generations."""

from __future__ import annotations

import orjson
import pytest

from streamrec.errors import EventError
from streamrec.events import decode_event
from streamrec.session import Session, SessionRules
from streams.batch import EndOffsets, Record, apply_batch
from streams.log_resets import REPLACED, SHORTER, LogMarks, Mark, mark_key, replaced

# a window of 2 ids: only the offset rule knows older redeliveries
RULES = SessionRules(max_len=10, dedup_window=2, max_event_bytes=2048)


class Sessions(dict[bytes, Session]):
    persistent = False

    def put(self, key: bytes, value: Session, partition: int) -> None:
        self[key] = value


def rec(user: str, eid: str, offset: int, partition: int = 3) -> Record:
    value = orjson.dumps({"event_id": eid, "user_id": user, "item_id": f"i-{eid}", "ts": 1})
    return Record(user.encode(), value, "clicks", partition, offset)


def ends(**by_partition: int) -> EndOffsets:
    return lambda topic, partition: by_partition.get(f"p{partition}")


def history(table: Sessions, marks: LogMarks, users: int = 5, per_user: int = 4,
            partition: int = 3) -> list[Record]:
    """``users`` × ``per_user`` events applied from offsets 0.. of ``partition``."""
    records = [rec(f"u{u}", f"old-{u}-{k}", k * users + u, partition)
               for k in range(per_user) for u in range(users)]
    out = apply_batch(table, records, RULES, marks=marks, end_offset=ends(p3=len(records), p4=len(records)))
    assert len(out.applied_ts) == len(records) and not out.resets
    return records


def test_a_log_shorter_than_the_applied_offsets_is_a_reset_and_its_events_apply() -> None:
    table, marks = Sessions(), LogMarks()
    history(table, marks)  # offsets 0..19 applied
    # the broker begins again: new events at offsets 0..4, the log ends at 5
    new = [rec(f"u{u}", f"new-{u}", u) for u in range(5)]
    out = apply_batch(table, new, RULES, marks=marks, end_offset=ends(p3=5))
    assert len(out.applied_ts) == 5 and out.duplicates == 0
    [reset] = out.resets
    assert (reset.partition, reset.high, reset.offset, reset.end, reset.generation) == (3, 19, 0, 5, 1)
    assert reset.reason == SHORTER and "clicks[3]" in reset.describe() and "19" in reset.describe()
    for u in range(5):
        s = table[f"u{u}".encode()]
        assert s["last_id"] == f"new-{u}" and s["seq"] == 5 and (s["p"], s["o"], s["g"]) == (3, u, 1)
    assert table[mark_key(3)]["g"] == 1 and marks.resets == 1


def test_redeliveries_beyond_the_id_window_are_still_dropped() -> None:
    table, marks = Sessions(), LogMarks()
    old = history(table, marks)
    before = {k: dict(v) for k, v in table.items()}
    # Kafka redelivers everything from offset 0: the log still ends at 20
    out = apply_batch(table, old, RULES, marks=marks, end_offset=ends(p3=20))
    assert out.duplicates == len(old) and not out.applied_ts and not out.resets
    assert table == before


def test_a_worker_that_knows_no_high_mark_tells_them_apart_from_the_sessions() -> None:
    # after a restart or a rebalance: the marks are empty, the sessions know their offsets
    table = Sessions()
    old = history(table, LogMarks())
    out = apply_batch(table, old, RULES, marks=LogMarks(), end_offset=ends(p3=20))
    assert out.duplicates == len(old) and not out.resets
    out = apply_batch(table, [rec("u2", "new", 0)], RULES, marks=LogMarks(), end_offset=ends(p3=1))
    assert len(out.applied_ts) == 1 and out.resets[0].high == 17  # u2's last offset


def test_an_applied_offset_holding_another_event_is_a_reset_whatever_the_log_end() -> None:
    # the new log has already grown past the high mark: its end says nothing, but the
    # record at the high mark is not the event applied there
    table, marks = Sessions(), LogMarks()
    history(table, marks)
    out = apply_batch(table, [rec("u4", "new-at-19", 19)], RULES, marks=marks,
                      end_offset=ends(p3=500))
    assert [r.reason for r in out.resets] == [REPLACED] and len(out.applied_ts) == 1


def test_the_batch_is_applied_again_when_a_reset_shows_up_in_its_middle() -> None:
    # the log end is unknown: u0's event at offset 0 looks like a redelivery until u4's,
    # at u4's last applied offset, shows the log was replaced; u0's is applied as well
    table, marks = Sessions(), LogMarks()
    history(table, marks)
    out = apply_batch(table, [rec("u0", "n0", 0), rec("u1", "n1", 1), rec("u4", "n4", 19)], RULES,
                      marks=marks)
    assert len(out.applied_ts) == 3 and out.duplicates == 0 and len(out.resets) == 1
    assert table[b"u0"]["last_id"] == "n0"


def test_after_a_reset_the_new_log_is_deduplicated_by_offset_again() -> None:
    table, marks = Sessions(), LogMarks()
    history(table, marks)
    new = [rec(f"u{u}", f"new-{u}-{k}", k * 5 + u) for k in range(3) for u in range(5)]
    assert len(apply_batch(table, new, RULES, marks=marks, end_offset=ends(p3=15)).resets) == 1
    before = {k: dict(v) for k, v in table.items()}
    out = apply_batch(table, new, RULES, marks=marks, end_offset=ends(p3=15))
    assert out.duplicates == 15 and not out.resets and table == before
    # and so does a worker that reads the generation from the table's marker
    out = apply_batch(table, new, RULES, marks=LogMarks(), end_offset=ends(p3=15))
    assert out.duplicates == 15 and not out.resets and table == before


def test_the_reset_of_one_partition_leaves_the_others_alone() -> None:
    table, marks = Sessions(), LogMarks()
    history(table, marks, partition=3)
    other = [rec(f"v{u}", f"v-{u}-{k}", k * 5 + u, partition=4) for k in range(4) for u in range(5)]
    apply_batch(table, other, RULES, marks=marks, end_offset=ends(p4=20))
    out = apply_batch(table, [rec("u0", "new", 0), *other], RULES, marks=marks,
                      end_offset=ends(p3=1, p4=20))
    assert [r.partition for r in out.resets] == [3]
    assert len(out.applied_ts) == 1 and out.duplicates == 20


def test_a_low_log_end_without_a_record_to_drop_is_no_reset() -> None:
    # a high watermark that lags for a moment (a leader change) while new records arrive
    table, marks = Sessions(), LogMarks()
    history(table, marks)
    out = apply_batch(table, [rec("u0", "next", 20), rec("new-user", "x", 21)], RULES,
                      marks=marks, end_offset=ends(p3=3))
    assert not out.resets and len(out.applied_ts) == 2


def test_a_session_of_a_later_generation_raises_the_marks() -> None:
    # the marker was lost (a changelog that began again too): the sessions still say
    mark = Mark()
    mark.saw({"p": 3, "o": 7, "g": 2, "last_id": "e"}, 3)
    assert (mark.generation, mark.high, mark.high_id) == (2, 7, "e")
    mark.saw({"p": 3, "o": 900, "last_id": "old"}, 3)  # generation 0: not this log
    assert mark.high == 7


@pytest.mark.parametrize(("state", "offset", "eid", "end", "expected"), [
    (None, 0, "x", 1, None),  # a new user: nothing to drop
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 10, "x", 11, None),  # a next event
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 9, "e9", 10, None),  # a redelivery
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 4, "e4", 10, None),  # beyond the window
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 4, "x", 5, SHORTER),
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9", "x"]}, 4, "x", 5, None),  # id known anyway
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 4, "x", None, None),  # end unknown
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 4, "x", 4, None),  # end not past it
    ({"p": 3, "o": 9, "last_id": "e9", "ids": ["e9"]}, 9, "x", 50, REPLACED),
    ({"p": 4, "o": 9, "last_id": "e9", "ids": ["e9"]}, 4, "x", 5, None),  # another partition
    ({"p": 3, "o": 9, "g": 1, "last_id": "e9", "ids": ["e9"]}, 4, "x", 5, None),  # another generation
])
def test_replaced(state: Session | None, offset: int, eid: str, end: int | None,
                  expected: str | None) -> None:
    assert replaced(Mark(generation=0), state, 3, offset, eid, end) == expected


def test_a_marker_key_is_never_a_user_key() -> None:
    value = orjson.dumps({"event_id": "e", "user_id": mark_key(3).decode("latin-1"),
                          "item_id": "i", "ts": 1})
    with pytest.raises(EventError):
        decode_event(mark_key(3), value, 2048)
