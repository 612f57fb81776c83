"""Opening the disk store's databases again: flushed, or left with a write-ahead log.

``streamrec bench-reopen`` writes N users' sessions (as :mod:`bench.state` builds
them) into eight partition databases opened with Faust's RocksDB options, in a
child process that then ends without closing them, as a worker's process does.
Before it ends, the child either flushes the databases (what
:meth:`streams.table_stores.SessionStore.flush` does at a worker's stop) or
leaves the sessions in the memtables and the write-ahead log (a kill -9, or a
stop without the flush). The parent times opening the eight databases again:
the step of a restart between the partitions' assignment and reading the
changelog's tail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PARTITIONS = 8


def _open_all(path: Path) -> list[object]:
    from faust.stores.rocksdb import RocksDBOptions

    return [RocksDBOptions(use_rocksdict=True).open(path / f"p{p}") for p in range(PARTITIONS)]


def _write(users: int, flush: bool, path: Path) -> None:
    """The child: write, maybe flush, and end without closing (no destructors run)."""
    from bench.state import _sessions

    dbs = _open_all(path)
    for n, (key, value) in enumerate(_sessions(users, 1, 200, 64, seed=0)):
        dbs[n % PARTITIONS].put(key, value)  # type: ignore[attr-defined]
    if flush:
        for db in dbs:
            db.flush()  # type: ignore[attr-defined]
    sys.stdout.flush()
    os._exit(0)


def _bytes(path: Path, suffix: str) -> int:
    return sum(f.stat().st_size for f in path.rglob(f"*{suffix}"))


@dataclass
class ReopenResult:
    users: int
    left: str  # "flushed" or "in the write-ahead log"
    wal_mb: float  # write-ahead logs before the open
    open_s: float  # opening the eight databases

    def row(self) -> str:
        return (f"{self.users:>9,d} users, {self.left:22s}: write-ahead logs {self.wal_mb:6.1f} MB, "
                f"open {self.open_s:6.3f} s")


def measure(users: int, flush: bool) -> ReopenResult:
    with tempfile.TemporaryDirectory(prefix="streamrec-reopen-") as tmp:
        path = Path(tmp)
        subprocess.run([sys.executable, "-m", "bench.reopen", str(users), "1" if flush else "0",
                        str(path)], check=True)
        wal = _bytes(path, ".log")
        t = time.perf_counter()
        dbs = _open_all(path)
        seconds = time.perf_counter() - t
        for db in dbs:
            db.close()  # type: ignore[attr-defined]
    return ReopenResult(users, "flushed" if flush else "in the write-ahead log",
                        round(wal / 1e6, 1), round(seconds, 3))



if __name__ == "__main__":  # the child of measure()
    _write(int(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3]))
