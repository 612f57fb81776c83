"""``streamrec bench-reopen``: databases left flushed or with their write-ahead logs."""

from __future__ import annotations

from bench.reopen import measure


def test_a_flushed_store_leaves_no_log_to_replay_and_an_unflushed_one_does() -> None:
    left = measure(3000, flush=False)
    flushed = measure(3000, flush=True)
    assert left.wal_mb > 0.1  # every session is in the log, to be replayed at the open
    assert flushed.wal_mb == 0.0
    assert (left.left, flushed.left) == ("in the write-ahead log", "flushed")
    assert left.open_s > 0 and flushed.open_s > 0
