"""Restart to ready, per table store: how long a worker holding N users' sessions is away.

For each store (``STREAMREC_TABLE_STORE``), on its own app id, topics and
Redis prefix:

1. One click for each of ``users`` users; a worker (static member ``bench-slot``,
   its own data directory) applies them all and writes them to the changelog.
2. The worker is stopped: SIGTERM (a rolling deploy; it commits and closes its
   stores) or, with ``kill``, SIGKILL (a crash).
3. A new worker process starts in the same slot on the same data directory.
   Measured from its process start: **ready** (``/ready`` answers 200: bundle
   loaded, partitions assigned, table recovered) and **fresh** (a click for
   each of ``probe`` users, sent once it is ready, has reached their lists);
   the changelog records it read (``streamrec_changelog_applied_total``) and its
   peak RSS.
4. With ``events``: that many more clicks, on users drawn at random from the
   ``users``, written while the restarted worker is paused (SIGSTOP, for a few
   seconds: less than its session timeout), then drained by it; its CPU seconds
   (user + system) per 1,000 of them. A run at 10,000 users
   beside one at 1,000,000 shows whether the per-event cost grows with the
   sessions held.
5. With the rocksdb store, once the worker has stopped: the size of its data
   directory, as left and after compacting every partition database (bytes per
   user = compacted size / users).

The workers write every changelog record as its own batch
(``producer_max_batch_bytes=1``): Tansu 0.6's changelog recovery needs it
(docs/operations.md, "The local broker and its limits"), and recovery is what this measures.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.load import produce
from bench.run import _cpu_s, _peak_rss_mb
from cli.harness import WorkerProcess
from cli.waiting import poll_until
from serving.keys import meta_prefix, recs_key
from serving.redis_client import sync_client
from streamrec.events import ClickEvent, encode_event
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streams.replay import send_paced

COMMIT_WAIT_S = 7.0  # two of Faust's offset commits (every 2.8 s), and a second


@dataclass
class RestartResult:
    store: str
    users: int
    stop: str  # "sigterm" or "sigkill"
    load_s: float  # first worker: all clicks applied
    ready_s: float  # process start -> /ready 200
    fresh_s: float  # process start -> the probe users' lists reflect their new click
    changelog_read: int  # changelog records the restarted worker read
    peak_rss_mb: float
    events: int = 0  # clicks sent after the restart for the CPU figure
    cpu_s_per_1k: float | None = None  # the restarted worker's CPU per 1,000 of them
    disk_bytes: int | None = None  # rocksdb: the data directory as the worker left it
    disk_bytes_compacted: int | None = None  # … after compacting every partition database

    def row(self) -> str:
        extra = "" if self.cpu_s_per_1k is None else f"  cpu {self.cpu_s_per_1k:5.3f} s/1k"
        if self.disk_bytes_compacted is not None:
            extra += (f"  disk {self.disk_bytes_compacted / 2**20:7.1f} MiB compacted "
                      f"({self.disk_bytes_compacted / self.users:5.0f} B/user)")
        return (f"{self.store:8s} {self.users:>8d} users  {self.stop:7s}  ready {self.ready_s:6.1f} s  "
                f"fresh {self.fresh_s:6.1f} s  changelog read {self.changelog_read:>8d}  "
                f"rss {self.peak_rss_mb:5.0f} MB  (load {self.load_s:.0f} s){extra}")


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def compact_databases(path: Path) -> None:
    """Compact every RocksDB database under ``path`` (opened as Faust's store opens them)."""
    from faust.stores.rocksdb import RocksDBOptions

    for db_dir in sorted(p for p in path.rglob("*.db") if p.is_dir()):
        db = RocksDBOptions(use_rocksdict=True).open(db_dir)
        try:
            db.compact_range(None, None)
        finally:
            db.close()


def _clicks(users: int, run: str) -> Iterator[tuple[bytes, bytes]]:
    for u in range(users):
        user = f"u{u}"
        yield user.encode(), encode_event(ClickEvent(f"{run}/{u}", user, f"i{1 + u % 1000}",
                                                     int(time.time() * 1000)))


def measure_restart(base: Settings, bundle: Path, *, store: str, users: int, probe: int,
                    kill: bool, log_dir: Path, events: int = 0) -> RestartResult:
    run = uuid.uuid4().hex[:8]
    disk = log_dir / f"restart-{run}-disk"
    s = base.model_copy(update={
        "app_id": f"restart-{run}", "clicks_topic": f"restart-{run}-clicks",
        "dlq_topic": f"restart-{run}-dlq", "model_updates_topic": f"restart-{run}-models",
        "items_topic": f"restart-{run}-items",
        "key_prefix": f"restart:{run}:", "table_store": store, "producer_max_batch_bytes": 1,
        "group_instance_id": "bench-slot", "data_dir": disk,
        "rebalance_timeout_s": 5.0, "session_timeout_s": 10.0})
    asyncio.run(ensure_topics(s))
    client = sync_client(s.redis_url.get_secret_value(), s.redis_cluster, decode_responses=True)
    workers: list[WorkerProcess] = []
    try:
        t0 = time.monotonic()
        asyncio.run(send_paced(s, s.clicks_topic, _clicks(users, "load")))
        first = WorkerProcess.start(s.model_copy(update={"worker_id": f"restart-{run}-a"}),
                                    log_dir / f"restart-{run}-a.log", bundle=bundle)
        workers.append(first)
        first.wait_for(lambda st: int(st.get("events", 0)) >= users, 3600, f"{users} clicks applied",
                       interval=0.5)
        load_s = time.monotonic() - t0
        time.sleep(COMMIT_WAIT_S)  # offsets committed, as between deploys
        if kill:
            first.kill()
        else:
            first.stop(timeout=120)
        t0 = time.monotonic()
        second = WorkerProcess.start(s.model_copy(update={"worker_id": f"restart-{run}-b"}),
                                     log_dir / f"restart-{run}-b.log", bundle=bundle)
        workers.append(second)
        poll_until(second.ready_code, lambda code: code == 200, timeout=3600,
                   procs=[second.proc], what="restarted worker ready", interval=0.05)
        ready_s = time.monotonic() - t0
        probes = [(f"u{u}".encode(), encode_event(ClickEvent(f"probe/{u}", f"u{u}", "i1",
                                                             int(time.time() * 1000))))
                  for u in range(0, users, max(1, users // probe))][:probe]
        asyncio.run(send_paced(s, s.clicks_topic, iter(probes)))

        def fresh() -> int:
            pipe = client.pipeline(transaction=False)
            for key, _ in probes:
                pipe.hget(recs_key(s.key_prefix, key.decode()), "last_event_id")
            return sum(1 for v in pipe.execute() if v and v.startswith("probe/"))

        poll_until(fresh, lambda n: n == len(probes), timeout=3600, procs=[second.proc],
                   what="probe lists fresh", interval=0.05)
        fresh_s = time.monotonic() - t0
        result = RestartResult(store, users, "sigkill" if kill else "sigterm", load_s, ready_s,
                               fresh_s, int(second.metric("streamrec_changelog_applied_total")),
                               _peak_rss_mb(second.proc.pid))
        if events:
            # written while the worker is paused, then drained: the producer does not share
            # the cores with the worker being timed (as ``streamrec bench`` at "max")
            time.sleep(1.0)  # the probes' status write lands
            second.pause()
            n0, cpu0 = int(second.status().get("events", 0)), _cpu_s(second.proc.pid)
            try:
                asyncio.run(produce(s, s.clicks_topic, events=events, rate=None, users=users,
                                    items=1000, run="cpu", seed=3))
            finally:
                second.resume()
            second.wait_for(lambda st: int(st.get("events", 0)) >= n0 + events, 3600,
                            f"{events} more clicks applied", interval=0.2)
            result.events = events
            result.cpu_s_per_1k = (_cpu_s(second.proc.pid) - cpu0) / events * 1000
            result.peak_rss_mb = _peak_rss_mb(second.proc.pid)
        if store == "rocksdb":
            second.stop(timeout=120)
            result.disk_bytes = dir_bytes(disk)
            compact_databases(disk)
            result.disk_bytes_compacted = dir_bytes(disk)
        return result
    finally:
        for w in workers:
            w.stop()
        shutil.rmtree(disk, ignore_errors=True)
        keys = list(client.scan_iter(f"{s.key_prefix}*", count=10_000))
        if s.redis_cluster:  # the keys that are not lists: the prefix as a hash tag
            keys += client.scan_iter(f"{meta_prefix(s.key_prefix, True)}*", count=10_000)
        for lo in range(0, len(keys), 5000):
            client.delete(*keys[lo:lo + 5000])


def as_dict(results: list[RestartResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
