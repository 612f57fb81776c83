"""The state benchmark's measured sizes: sessions as the worker builds them, RocksDB on disk."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.restart import compact_databases, dir_bytes
from bench.state import _sessions, session_bytes
from streamrec.session import apply_event


def test_sessions_have_the_workers_fields_and_bounded_windows() -> None:
    built = apply_event(None, "e", "1", 0, 200, 64, 0, 0)
    assert built is not None
    for key, value in _sessions(3, 300, 200, 64, seed=0):
        s = orjson.loads(value)
        assert set(s) == set(built)
        assert len(s["items"]) == 200 and len(s["ids"]) == 64 and s["last_id"] == s["ids"][-1]
        assert key.startswith(b"u")


def test_session_bytes_grow_with_the_session() -> None:
    short, full = session_bytes([1, 200], 1000, 200, 64)
    assert 0 < short.changelog_bytes < full.changelog_bytes
    assert 0 < short.rocksdb_bytes < full.rocksdb_bytes
    assert full.memory_rss_bytes > full.changelog_bytes  # Python objects outweigh their JSON


def test_compacting_keeps_the_data_and_counts_the_files(tmp_path: Path) -> None:
    from faust.stores.rocksdb import RocksDBOptions

    path = tmp_path / "t-sessions-0.db"
    db = RocksDBOptions(use_rocksdict=True).open(path)
    for n in range(500):
        db.put(f"u{n}".encode(), b"x" * 100)
        db.put(f"u{n}".encode(), b"y" * 100)  # an overwrite compaction drops
    db.close()
    compact_databases(tmp_path)
    assert dir_bytes(tmp_path) > 0
    db = RocksDBOptions(use_rocksdict=True).open(path)
    assert db.get(b"u7") == b"y" * 100
    db.close()
