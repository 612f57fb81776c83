"""The fault suite: every promise of docs/architecture.md under kills, pauses, outages and
hostile input.

Each scenario ends with the same check (``Scenario.check``): every user's list
reflects that user's last event, holds no clicked item, and counts every event
exactly once; no worker ended on its own; dead letters = what was injected.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import Scenario
from tests.faults.harness import dead_letters, end_offsets, status

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RESULTS = Path(os.environ.get("STREAMREC_FAULT_RESULTS", "results/faults.json"))


def record(name: str, **figures: float) -> None:
    """Keep measured figures (failover, recovery) for docs/benchmarks.md."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = {k: round(v, 2) for k, v in figures.items()}
    RESULTS.write_text(json.dumps(data, indent=2))
    print(name, figures)


POISON: list[tuple[bytes | None, bytes | None]] = [
    (b"p1", b'{"event_id":"\xff\xfe","user_id":"p1","item_id":"i","ts":1}'),  # invalid UTF-8
    (b"p2", b'{"event_id":"a","user_id":"p2","item_id":"i","ts":1,"pad":"' + b"x" * 900_000 + b'"}'),
    (b"p3", b"{not json"),
    (b"p4", b'{"event_id":"a","user_id":"p4","ts":1}'),
    (b"p5", b'{"event_id":"a","user_id":"p5","item_id":"i","ts":"noon"}'),
    (None, b'{"event_id":"a","user_id":"p6","item_id":"i","ts":1}'),
    (b"p7", None),
    (b"p8", b'{"event_id":"a","user_id":"someone-else","item_id":"i","ts":1}'),
    (b"\xff\xfe", b'{"event_id":"a","user_id":"p9","item_id":"i","ts":1}'),
    (b"p10", b'{"event_id":"a","user_id":"p10","item_id":"i","ts":1e400}'),
    (b"p11", b"[" * 50_000),
]


def test_poison_records_are_dead_lettered_and_survive_restarts(scenario: Callable[..., Scenario]) -> None:
    sc = scenario(users=100)
    sc.cluster.start("w1")
    sc.send(sc.work.wave(2) + POISON + sc.work.wave(2))
    sc.wait_caught_up()
    sc.cluster.workers[0].kill()  # a restart must not crash on the same records again
    sc.cluster.start("w2")
    sc.send(sc.work.wave(1))
    sc.wait_caught_up()
    sc.check()
    letters = dead_letters(sc.settings, timeout=5, expect=2 * len(POISON) + 1)
    # at-least-once: a batch redelivered after the kill may dead-letter a record again;
    # its origin (partition, offset) identifies it
    by_origin = {(x["partition"], x["offset"]): x for x in letters}
    assert len(by_origin) == len(POISON)
    big = [x for x in by_origin.values() if x["truncated"]]
    assert len(big) == 1 and big[0]["value_bytes"] == len(POISON[1][1] or b"")
    reasons = sorted(str(x["reason"]).split(":")[0] for x in by_origin.values())
    assert any("invalid UTF-8" in r for r in reasons), reasons


@pytest.mark.parametrize(("producer", "store"), [
    ("murmur2", "memory"), ("crc32", "memory"), ("explicit", "memory"), ("crc32", "rocksdb")])
def test_state_follows_the_source_partition_when_a_worker_joins(
        scenario: Callable[..., Scenario], producer: str, store: str) -> None:
    sc = scenario(table_store=store)
    sc.cluster.start("w1")
    sc.send(sc.work.wave(3), producer)
    sc.wait_caught_up()
    sc.cluster.start("w2")  # scale-out: half the partitions (and their sessions) move
    time.sleep(4)
    sc.send(sc.work.wave(3), producer)
    sc.wait_caught_up()
    sc.cluster.workers[0].stop()  # and back: w2 recovers w1's partitions
    sc.send(sc.work.wave(2), producer)
    sc.wait_caught_up()
    sc.check()


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_paused_worker_never_overwrites_newer_state(scenario: Callable[..., Scenario],
                                                    store: str) -> None:
    # with rocksdb, the zombie also keeps its stale sessions on disk and reopens them
    sc = scenario(table_store=store)
    a, b = sc.cluster.start("a"), sc.cluster.start("b")
    sc.send(sc.work.wave(3))
    sc.wait_caught_up()
    a.pause()  # b takes a's partitions after the session timeout
    sc.send(sc.work.wave(3))
    sc.wait_caught_up()
    sc.send(sc.work.wave(2))
    sc.wait_caught_up()
    a.resume()  # the zombie wakes up with its old state and in-flight work, then rejoins
    time.sleep(8)
    sc.send(sc.work.wave(2))
    sc.wait_caught_up()
    sc.check()
    # everything must also be right when the state is rebuilt from the changelog alone
    a.kill()
    b.kill()
    sc.cluster.start("c")
    sc.send(sc.work.wave(1))
    sc.wait_caught_up()
    sc.check()


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_kill9_three_times_mid_stream(scenario: Callable[..., Scenario], tmp_path: Path,
                                      store: str) -> None:
    # a dedup window of 2 ids: only the offset rule can recognise the redelivered batches
    sc = scenario(dedup_window=2, table_store=store)
    # one disk for every restart: with rocksdb, each restart reopens sessions written
    # locally whose changelog records the kill may have lost
    disk = {"STREAMREC_DATA_DIR": str(tmp_path / "disk")}
    worker = sc.cluster.start("k0", **disk)
    for n in range(3):
        sc.send(sc.work.wave(4))
        time.sleep(0.3 + 0.3 * n)  # mid-stream: some batches applied, some not yet
        worker.kill()
        worker = sc.cluster.start(f"k{n + 1}", **disk)
    sc.send(sc.work.wave(1))
    seconds = sc.wait_caught_up()
    sc.check()
    # and the changelog alone must hold the same: a worker on a fresh disk takes over
    worker.kill()
    sc.cluster.start("fresh")
    sc.send(sc.work.wave(1))
    sc.wait_caught_up()
    sc.check()
    record(f"kill9_x3_{store}", users=len(sc.work.users), last_restart_to_caught_up_s=seconds)


def test_failover_when_one_of_two_workers_is_killed(scenario: Callable[..., Scenario]) -> None:
    sc = scenario()
    a, _ = sc.cluster.start("a"), sc.cluster.start("b")
    sc.send(sc.work.wave(3))
    sc.wait_caught_up()
    time.sleep(2)
    a.kill()
    t0 = time.monotonic()
    sc.send(sc.work.wave(1))
    sc.wait_caught_up()
    failover = time.monotonic() - t0
    sc.check()
    record("failover_kill9_one_of_two", session_timeout_s=sc.settings.session_timeout_s,
           kill_to_all_lists_fresh_s=failover)


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_restart_to_ready_with_2000_users(scenario: Callable[..., Scenario], tmp_path: Path,
                                          store: str) -> None:
    sc = scenario(users=2000, table_store=store)
    # static membership (docs/operations.md, "Failover and restarts")
    slot = {"STREAMREC_GROUP_INSTANCE_ID": "slot-0",
            "STREAMREC_DATA_DIR": str(tmp_path / "slot-0")}  # the slot's disk
    sc.cluster.start("s1", **slot)
    sc.send(sc.work.wave(3))
    sc.wait_caught_up(timeout=120)
    sc.cluster.workers[0].kill()
    t0 = time.monotonic()
    # takes s1's place in the group; recovers 2,000 sessions from the changelog (memory)
    # or reopens them on the slot's disk (rocksdb)
    sc.cluster.start("s2", **slot)
    sc.send(sc.work.wave(1))
    sc.wait_caught_up(timeout=120)
    seconds = time.monotonic() - t0
    sc.check()
    record(f"restart_2000_users_{store}", users=len(sc.work.users),
           process_start_to_all_lists_fresh_s=seconds)


@pytest.mark.skipif(not os.environ.get("FAULTS_BROKER_RESTART"), reason=(
    "opt-in (FAULTS_BROKER_RESTART=1): needs a broker that keeps its log over a kill -9; "
    "Tansu 0.6 on s3rver does not (docs/operations.md, 'The local broker and its limits')"))
def test_broker_restart_mid_stream(scenario: Callable[..., Scenario]) -> None:
    sc = scenario(persistent_broker=True)
    assert sc.broker is not None
    sc.cluster.start("b1")
    sc.send(sc.work.wave(3))
    sc.wait_caught_up()
    sc.send(sc.work.wave(2))
    time.sleep(0.3)  # mid-stream: some of the wave applied, some not yet
    before = end_offsets(sc.settings)
    sc.broker.kill()  # kill -9
    time.sleep(5)
    assert not sc.cluster.exited(), sc.cluster.logs()
    t0 = time.monotonic()
    sc.broker.start()
    sc.send(sc.work.wave(1))
    after = end_offsets(sc.settings)
    if any(after[p] < before[p] for p in before):
        # Tansu 0.6's s3 engine: every partition's end offset is reset after a restart
        # (seen: 154/172/127/151 before, 1/1/1/1 after a 200-record wave), and new
        # records overwrite the old ones from offset 0: the log itself is gone
        pytest.skip(f"the local broker lost its log in the restart (end offsets {before} "
                    f"before, {after} after): nothing a client can do; runs on a durable broker")
    sc.wait_caught_up(timeout=120)
    record("broker_restart", broker_start_to_all_lists_fresh_s=time.monotonic() - t0)
    sc.check()


def test_redis_outages_never_end_a_worker(scenario: Callable[..., Scenario]) -> None:
    sc = scenario()
    sc.redis.stop()  # down at start
    sc.cluster.start("r1")
    sc.send(sc.work.wave(2))
    time.sleep(6)
    assert not sc.cluster.exited(), sc.cluster.logs()
    sc.redis.start()
    sc.wait_caught_up()
    sc.redis.stop()  # down mid-stream
    sc.send(sc.work.wave(2))
    time.sleep(4)
    sc.redis.start()
    sc.wait_caught_up()
    sc.redis.stop()  # down while partitions are reassigned
    sc.cluster.start("r2")
    sc.send(sc.work.wave(2))
    time.sleep(8)
    assert not sc.cluster.exited(), sc.cluster.logs()
    sc.redis.start()
    sc.wait_caught_up()
    sc.redis.pause()  # paused (connections hang instead of failing)
    sc.send(sc.work.wave(2))
    time.sleep(5)
    sc.redis.resume()
    sc.wait_caught_up()
    sc.check()
    st = status(sc.settings, "r1")
    assert int(st["applied"]) + int(status(sc.settings, "r2").get("applied", 0)) == sc.work.sent


def test_duplicates_and_out_of_order_events(scenario: Callable[..., Scenario]) -> None:
    sc = scenario(users=100)
    sc.cluster.start("d1")
    now = int(time.time() * 1000)
    sc.send(sc.work.wave(3, ts=now))
    sc.send(sc.work.replayed(3))  # producer re-sends inside the dedup window: ignored
    sc.send(sc.work.wave(2, ts=now - 86_400_000))  # a day older than the events before
    sc.wait_caught_up()
    sc.check()
    st = status(sc.settings, "d1")
    assert int(st["duplicates"]) == 300 and int(st["applied"]) == 500
