"""State size: bytes per user of sessions (changelog, memory store, RocksDB) and of lists in Redis.

``state_rows`` computes a session's size from its objects. The measured figures:

* ``list_bytes``: a real worker (``bench.run.Fleet``) at each ``STREAMREC_TOP_N``
  writes one list per user; Redis's ``MEMORY USAGE`` of each list hash (key,
  value and the key's dictionary entry; not its TTL entry or the allocator's
  fragmentation), averaged; and Redis's ``used_memory`` growth per list over
  the run (TTL entries and the allocator included: exact only on a Redis of
  its own, e.g. ``STREAMREC_REDIS_URL`` pointing at a spare ``redis-server``).
* ``session_bytes``: many users' sessions of a given length, built as the worker
  builds them (random UUID event ids), held in a fresh process the way the
  memory store holds them (RSS growth per user), and written to a RocksDB
  database opened with Faust's options, then compacted (directory size per user).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

from bench.run import Fleet
from serving.keys import recs_key
from streamrec.events import ClickEvent, encode_event
from streamrec.session import apply_event
from streamrec.settings import Settings
from streams.replay import send_paced


def deep_size(obj: Any) -> int:
    """Bytes of Python objects reachable from ``obj`` (dicts, lists, strs, ints)."""
    seen: set[int] = set()
    stack, total = [obj], 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple):
            stack.extend(o)
    return total


def session_size(events: int, max_len: int, dedup_window: int) -> dict[str, int]:
    """A session after ``events`` clicks with realistic ids (Beauty-like item ids, UUID event ids)."""
    s = None
    for n in range(events):
        s = apply_event(s, f"3f2c8a9e-1b4d-4c6a-9f0e-{n:012d}", f"{1000 + n * 7 % 12101}",
                        1_764_000_000_000 + n, max_len, dedup_window)
    assert s is not None
    key = b"user-00012345"
    return {"events": events, "changelog_bytes": len(key) + len(orjson.dumps(s)),
            "memory_bytes": deep_size(s) + sys.getsizeof(key)}


def state_rows(max_len: int, dedup_window: int) -> list[str]:
    """``streamrec bench-state``: per-user bytes after 1 to 500 events, scaled to 10M users."""
    rows = []
    for events in (1, 10, 50, 500):
        r = session_size(events, max_len, dedup_window)
        rows.append(f"after {events:4d} events: changelog {r['changelog_bytes']:6d} B/user, "
                    f"memory {r['memory_bytes']:6d} B/user -> 10M users: "
                    f"{r['changelog_bytes'] * 1e7 / 2**30:6.1f} GiB changelog, "
                    f"{r['memory_bytes'] * 1e7 / 2**30:6.1f} GiB in memory")
    return rows


# --- Measured sizes: lists in Redis, sessions in each table store --------------------------


@dataclass
class ListBytes:
    """Redis ``MEMORY USAGE`` of the list hashes a worker wrote at one ``top_n``."""

    top_n: int
    lists: int  # list hashes measured
    mean_bytes: float
    p99_bytes: float
    encoding: str  # the hashes' OBJECT ENCODING (most common)
    key_bytes: float  # mean key length (prefix included)
    # Redis's used_memory growth over the run per list (TTL entries and the allocator
    # included); only meaningful on a Redis nobody else writes to meanwhile
    used_memory_per_list: float = 0.0

    def row(self) -> str:
        return (f"top_n {self.top_n:3d}: {self.mean_bytes:6.0f} B/list mean, p99 {self.p99_bytes:6.0f} B "
                f"({self.lists} lists, {self.encoding}, key {self.key_bytes:.0f} B) -> "
                f"1M users {self.mean_bytes * 1e6 / 2**30:5.2f} GiB; used_memory "
                f"+{self.used_memory_per_list:6.0f} B/list")


def list_bytes(base: Settings, bundle: Path, *, top_ns: list[int], users: int, log_dir: Path,
               ) -> list[ListBytes]:
    """For each ``top_n``: a fresh worker (``bench.run.Fleet``) applies one click for each
    of ``users`` users, then every list hash it wrote is measured with ``MEMORY USAGE``
    (``SAMPLES 0``: exact), before the fleet deletes its keys."""
    out = []
    for n in top_ns:
        fleet = Fleet(base.model_copy(update={"top_n": n}), bundle, "streamrec", 1, log_dir)
        s = fleet.settings
        try:
            asyncio.run(send_paced(s, s.clicks_topic, _one_click_each(users)))
            used0 = int(fleet.redis.info("memory")["used_memory"])
            fleet.start()
            fleet.wait_events(users)
            used = int(fleet.redis.info("memory")["used_memory"]) - used0
            keys = list(fleet.redis.scan_iter(recs_key(s.key_prefix, "*"), count=10_000))
            sizes, encodings = [], Counter[str]()
            for lo in range(0, len(keys), 1000):
                pipe = fleet.redis.pipeline(transaction=False)
                for k in keys[lo:lo + 1000]:
                    pipe.memory_usage(k, samples=0)
                    pipe.object("ENCODING", k)
                replies = pipe.execute()
                sizes += [int(b) for b in replies[0::2] if b is not None]
                encodings.update(str(e) for e in replies[1::2] if e is not None)
            out.append(ListBytes(n, len(sizes), float(np.mean(sizes)), float(np.percentile(sizes, 99)),
                                 encodings.most_common(1)[0][0],
                                 float(np.mean([len(k.encode()) for k in keys])),
                                 used / max(len(sizes), 1)))
        finally:
            fleet.stop()
    return out


def _one_click_each(users: int) -> Iterator[tuple[bytes, bytes]]:
    for u in range(users):
        ev = ClickEvent(str(uuid.uuid4()), f"u{u}", f"i{1 + u % 1000}", int(time.time() * 1000))
        yield ev.user_id.encode(), encode_event(ev)


@dataclass
class SessionBytes:
    """Per-user bytes of ``users`` sessions of ``events`` clicks in each table store."""

    events: int
    users: int
    changelog_bytes: float  # key + JSON value, as written to the changelog and to RocksDB
    memory_rss_bytes: float  # RSS growth of a fresh process holding them as the memory store does
    rocksdb_bytes: float  # the RocksDB directory after compaction

    def row(self) -> str:
        return (f"{self.events:4d} events/user, {self.users} users: changelog "
                f"{self.changelog_bytes:6.0f} B/user, memory store RSS {self.memory_rss_bytes:6.0f} "
                f"B/user, rocksdb {self.rocksdb_bytes:6.0f} B/user on disk (compacted)")


def _sessions(users: int, events: int, max_len: int, dedup_window: int,
              seed: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, JSON value) of ``users`` sessions after ``events`` clicks each, as the worker
    writes them: random UUID event ids, Beauty-like item ids (1 to 12,101), the fields
    of a session ``apply_event`` builds."""
    rng = random.Random(seed)
    template = apply_event(None, "e", "1", 0, max_len, dedup_window, 0, 0) or {}
    for u in range(users):
        ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4))
               for _ in range(min(events, dedup_window))]
        s = {**template,
             "items": [str(rng.randint(1, 12_101)) for _ in range(min(events, max_len))],
             "ids": ids, "seq": events, "last_id": ids[-1],
             "last_ts": 1_764_000_000_000 + rng.randrange(10**9),
             "p": u % 8, "o": rng.randrange(10**8)}
        yield f"u{10_000_000 + u}".encode(), orjson.dumps(s)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _store_sizes(users: int, events: int, max_len: int, dedup_window: int, tmp: str,
                 ) -> tuple[float, float, float]:
    """In a fresh process: (changelog, memory-store RSS, compacted RocksDB) bytes per user."""
    from faust.stores.rocksdb import RocksDBOptions

    gc.collect()
    rss0 = _rss()
    # the memory store: key -> the decoded dict (as a changelog recovery leaves it), and
    # Faust's key -> partition index
    data: dict[bytes, Any] = {}
    partition: dict[bytes, int] = {}
    total = 0
    for key, value in _sessions(users, events, max_len, dedup_window, 1):
        data[key] = orjson.loads(value)
        partition[key] = data[key]["p"]
        total += len(key) + len(value)
    gc.collect()
    memory = (_rss() - rss0) / users
    del data, partition
    path = Path(tmp) / f"sessions-{events}.db"
    db = RocksDBOptions(use_rocksdict=True).open(path)
    try:
        for key, value in _sessions(users, events, max_len, dedup_window, 1):
            db.put(key, value)
        db.flush()
        db.compact_range(None, None)
    finally:
        db.close()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return total / users, memory, disk / users


def session_bytes(events: list[int], users: int, max_len: int, dedup_window: int,
                  ) -> list[SessionBytes]:
    """Each point in a fresh (spawned) process, so RSS growth is the sessions' alone."""
    ctx = multiprocessing.get_context("spawn")
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        for n in events:
            with ctx.Pool(1) as pool:
                c, m, d = pool.apply(_store_sizes, (users, n, max_len, dedup_window, tmp))
            out.append(SessionBytes(n, users, c, m, d))
    return out
