"""Unit tests of :mod:`streams.tables`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.tables import SessionTable


@dataclass
class _Msg:
    partition: int = 0
    offset: int = 0


@dataclass
class _Event:
    key: bytes
    value: Any
    message: _Msg


class _FakeTable:
    """Just what SessionTable._not_older reads: the stored values and a key codec."""

    def __init__(self, data: dict[bytes, Any]) -> None:
        self.data = data
        self.stale_skipped = 0

    def _to_key(self, k: Any) -> Any:
        return k


def test_changelog_records_never_roll_a_session_back() -> None:
    table = _FakeTable({b"u1": {"seq": 5}})
    batch = [
        _Event(b"u1", {"seq": 3}, _Msg()),  # older than what we hold: a zombie's late write
        _Event(b"u1", {"seq": 6}, _Msg()),
        _Event(b"u1", {"seq": 4}, _Msg()),  # older than the record just accepted
        _Event(b"u2", {"seq": 1}, _Msg()),
        _Event(b"u2", None, _Msg()),  # tombstones follow Faust's rules
    ]
    kept = list(SessionTable._not_older(table, batch))  # type: ignore[arg-type]
    assert [(e.key, e.value and e.value["seq"]) for e in kept] == [
        (b"u1", 6), (b"u2", 1), (b"u2", None)]
    assert table.stale_skipped == 2

