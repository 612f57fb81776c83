"""The session table on each store (``STREAMREC_TABLE_STORE``, :mod:`streams.table_stores`).

The same recovery promise on both: a worker that takes over rebuilds every
session from the changelog. And what only the persistent store gives: a worker
restarted on its own data directory reads only the changelog records it missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.waiting import poll_until
from serving.bundle import load_bundle
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration

USERS = 40


def clicks(step: int, items: list[str], prefix: str = "r") -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{u}".encode(),
             encode_event(ClickEvent(f"{prefix}{u}/{step}", f"{prefix}{u}", items[step], 1_700_000_000_000)))
            for u in range(USERS)]


def recovered(w: WorkerProc) -> int:
    """Changelog records the worker read into its table, once it is ready (``/metrics``)."""
    poll_until(w.ready_code, lambda code: code == 200, timeout=60, procs=[w.proc],
               what=f"{w.name} /ready")
    return int(w.metric("streamrec_changelog_applied_total"))


def assert_lists(s: Settings, seq: int, seen: list[str], prefix: str = "r") -> None:
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in range(USERS):
        r = reader.get_recommendations(f"{prefix}{u}")
        assert r is not None and r.seq == seq, (u, r)
        assert r.last_event_id == f"{prefix}{u}/{seq - 1}"
        assert not set(r.items) & set(seen)  # the recovered history is still filtered


def three_clicks_each_then_stop(s: Settings, start_worker: Callable[[Settings, Path], WorkerProc],
                                bundle: Path, items: list[str]) -> WorkerProc:
    """A worker that applied three clicks of each user, stopped (SIGTERM)."""
    w = start_worker(s, bundle)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [r for t in range(3) for r in clicks(t, items)]))
    w.wait_events(3 * USERS)
    w.stop()
    return w


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_another_worker_recovers_every_session_from_the_changelog(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path, store: str,
) -> None:
    s = make_settings(table_store=store)
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    w1 = start_worker(s, tiny_bundle_dir)
    first = [r for t in range(3) for r in clicks(t, items)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, first))
    w1.wait_events(len(first))
    w1.stop()
    w2 = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), tiny_bundle_dir)
    assert w2.wait_ready()["table_store"] == store
    assert recovered(w2) >= USERS  # a new data directory: the whole changelog
    redelivered = clicks(1, items)  # must be duplicates: the state came back
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, redelivered + clicks(3, items)))
    st = w2.wait_events(2 * USERS)
    assert int(st.get("duplicates", 0)) == USERS and int(st["applied"]) == USERS
    assert_lists(s, 4, items[:4])


def test_rocksdb_restart_reads_only_the_changelog_it_missed(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings(table_store="rocksdb")
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    a = three_clicks_each_then_stop(s, start_worker, tiny_bundle_dir, items)
    # while it is down, another worker (its own data directory) moves half the users on
    b = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), tiny_bundle_dir)
    half = [r for r in clicks(3, items) if int(r[0][1:]) % 2 == 0]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, half))
    b.wait_events(len(half))
    b.stop()
    # a's data directory, under another name (a new status hash to wait on)
    a2 = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-again",
                                           "data_dir": a.settings.data_dir}), tiny_bundle_dir)
    # only b's records: the 3 x 40 sessions a wrote are on its disk
    assert recovered(a2) == len(half)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic,
                         [r for r in clicks(3, items) if int(r[0][1:]) % 2] + clicks(4, items)))
    a2.wait_events(USERS // 2 + USERS)
    assert_lists(s, 5, items[:5])


def test_a_stopped_worker_leaves_its_sessions_in_files_not_in_the_write_ahead_log(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    """A database opened again replays its write-ahead log: sessions left there would make
    every restart's time grow with the users (``streamrec bench-reopen``). At a stop, Faust
    lets the databases go and the binding closes them, which writes the memtables out."""
    s = make_settings(table_store="rocksdb")
    w = three_clicks_each_then_stop(s, start_worker, tiny_bundle_dir,
                                    list(load_bundle(tiny_bundle_dir).vocab.ids))
    assert w.settings.data_dir is not None
    dbs = [d.parent for d in Path(w.settings.data_dir).rglob("CURRENT")]
    assert len(dbs) == s.topic_partitions, dbs
    logged = {d.name: sum(f.stat().st_size for f in d.glob("*.log")) for d in dbs}
    assert not any(logged.values()), logged  # nothing left to replay
    assert sum(len(list(d.glob("*.sst"))) for d in dbs) >= len(dbs) // 2  # the sessions, in files
