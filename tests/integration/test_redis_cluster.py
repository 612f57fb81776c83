"""Workers on a real Redis Cluster (three masters, three replicas on loopback): lists over
every slot, trending, status and the HTTP read API, and a master killed mid-stream."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from serving.bundle import load_bundle
from serving.keys import epoch_key, meta_prefix
from serving.list_types import SOURCE_MODEL, Provenance, Ranked
from serving.reader import RecsReader
from serving.redis_client import async_client, cluster_slot, sync_client
from serving.redis_store import RecsWriter, check_redis
from serving.trending import trending_key
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc
from tests.integration.redis_cluster import LocalCluster
from tests.integration.test_redis_acl import WORKER_COMMANDS

# What a cluster client needs beyond a worker's commands: the slot map and the command table.
CLUSTER_COMMANDS = ["+cluster|slots", "+command"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield c
    finally:
        c.stop()


def _clicks(history: dict[str, list[str]], step: int, items: list[str], rng: random.Random,
            users: list[str], now: int) -> list[tuple[bytes, bytes]]:
    out = []
    for user in users:
        item = rng.choice(items)
        history.setdefault(user, []).append(item)
        out.append((user.encode(), encode_event(ClickEvent(f"{user}/{step}", user, item, now + step))))
    return out


def _check_lists(reader: RecsReader, history: dict[str, list[str]], top_n: int) -> None:
    for user, seen in history.items():
        r = reader.get_recommendations(user)
        assert r is not None, user
        assert r.last_event_id == f"{user}/{len(seen) - 1}" and r.seq == len(seen), (user, r)
        assert len(r.items) == top_n
        assert not set(r.items) & set(seen), f"{user} got a clicked item"


def test_a_worker_on_a_cluster_writes_lists_over_every_slot_trending_and_status(
    cluster: LocalCluster, make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings, Path], WorkerProc], tiny_bundle_dir: Path,
) -> None:
    s = make_settings(redis_cluster=True, redis_url=cluster.url)
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    w = start_worker(s, tiny_bundle_dir)
    rng = random.Random(11)
    users = [f"user-{u}" for u in range(500)]
    history: dict[str, list[str]] = {}
    now = int(time.time() * 1000)
    records = [r for step in range(4) for r in _clicks(history, step, items, rng, users, now)]
    hot = items[-1]  # the least popular item of training: trending now
    records += [(f"fan{u}".encode(), encode_event(ClickEvent(f"fan{u}/0", f"fan{u}", hot, now)))
                for u in range(30)]
    history.update({f"fan{u}": [hot] for u in range(30)})
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    st = w.wait_events(len(records))
    assert int(st["applied"]) == len(records)

    reader = RecsReader.from_url(cluster.url, s.key_prefix, cluster=True)
    _check_lists(reader, history, s.top_n)
    # not hash-tagged into one slot: the lists are on every master
    masters = cluster.masters()
    per_master = {p: int(cluster.client(p).dbsize()) for p in masters}
    assert all(n >= 100 for n in per_master.values()), per_master
    assert len({cluster_slot(f"{s.key_prefix}recs:{u}") for u in users}) > 450

    # the meta keys sit together under the prefix as a hash tag
    admin = sync_client(cluster.url, cluster=True, decode_responses=True)
    meta = meta_prefix(s.key_prefix, True)
    assert int(admin.get(epoch_key(meta)) or 0) >= 1
    assert admin.zscore(trending_key(meta), hot) is not None
    statuses = reader.worker_statuses()
    assert int(statuses[s.worker_id]["events"]) == len(records)

    # a user the model knows nothing of gets what is trending (read back by the worker)
    time.sleep(2 * s.trending_refresh_s + 0.5)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [
        (b"newbie", encode_event(ClickEvent("newbie/0", "newbie", "not-in-the-model", now)))]))
    w.wait_events(len(records) + 1)
    newbie = reader.get_recommendations("newbie")
    assert newbie is not None and newbie.source == "trending" and newbie.items[0] == hot

    # the HTTP read API reads the cluster too
    code, body = w.get("/recs/user-7")
    assert code == 200 and orjson.loads(body)["last_event_id"] == "user-7/3"


def test_a_least_privilege_acl_user_writes_and_reads_on_a_cluster(cluster: LocalCluster) -> None:
    prefix, password = f"acl:{uuid.uuid4().hex[:8]}:", uuid.uuid4().hex
    meta = meta_prefix(prefix, True)
    for port in cluster.ports:  # ACLs are per node
        admin = cluster.client(port)
        admin.acl_setuser("sr-worker", enabled=True, passwords=[f"+{password}"],
                          keys=[f"{prefix}*", f"{meta}*"], commands=WORKER_COMMANDS + CLUSTER_COMMANDS)
        admin.acl_setuser("sr-reader", enabled=True, passwords=[f"+{password}"],
                          keys=[f"{prefix}recs:*"], commands=["+hgetall", *CLUSTER_COMMANDS])
    url = f"redis://sr-worker:{password}@127.0.0.1:{cluster.ports[0]}"
    check_redis(Settings(redis_cluster=True, redis_url=url, key_prefix=prefix))  # type: ignore[arg-type]

    async def write() -> list[bool]:
        client = async_client(url, cluster=True)
        try:
            w = RecsWriter(client, prefix, 600, 600, cluster=True)
            await w.load_scripts()
            lists = [(Provenance(f"u{i}", 1, f"u{i}/0", 1), Ranked(["a", "b"], [1.0, 0.5], SOURCE_MODEL))
                     for i in range(200)]
            return await w.write(lists, "v1", 1, 0, "w1", {"events": 200}, {"last_batch_size": 200},
                                 batch_id="b1", clicked={"a": 3})
        finally:
            await client.aclose()

    assert asyncio.run(write()) == [True] * 200
    reader = RecsReader.from_url(f"redis://sr-reader:{password}@127.0.0.1:{cluster.ports[1]}",
                                 prefix, cluster=True)
    assert all(reader.get_recommendations(f"u{i}").last_event_id == f"u{i}/0"  # type: ignore[union-attr]
               for i in range(200))
    admin = sync_client(cluster.url, cluster=True)
    assert admin.zscore(trending_key(meta), "a") is not None


def test_writes_load_the_scripts_again_where_nodes_lost_them(cluster: LocalCluster) -> None:
    prefix = f"noscript:{uuid.uuid4().hex[:8]}:"
    lists = [(Provenance(f"u{i}", 2, f"u{i}/1", 1), Ranked(["a"], [1.0], SOURCE_MODEL))
             for i in range(100)]

    async def write() -> tuple[list[bool], list[bool]]:
        client = async_client(cluster.url, cluster=True)
        try:
            w = RecsWriter(client, prefix, 600, 600, cluster=True)
            await w.load_scripts()
            for port in cluster.masters():  # a restarted or promoted node has no scripts
                cluster.client(port).script_flush()
            first = await w.write(lists, "v1", 1, 0, "w1", {"events": 100}, {}, batch_id="b1",
                                  clicked={"a": 1})
            # every other one older than the stored list: flags come back in the batch's order
            older = [(Provenance(p.user_id, 1 if i % 2 else 3, "old", 1), r)
                     for i, (p, r) in enumerate(lists)]
            return first, await w.write(older, "v1", 1, 0, "w1", {"events": 100}, {}, batch_id="b2")
        finally:
            await client.aclose()

    first, older = asyncio.run(write())
    assert first == [True] * 100 and older == [i % 2 == 0 for i in range(100)]  # conditional
    status = RecsReader.from_url(cluster.url, prefix, cluster=True).worker_statuses()["w1"]
    assert status["events"] == "200"  # each batch counted once


def test_a_master_killed_mid_stream_fails_over_and_every_list_is_right(
    tmp_path: Path, make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings, Path], WorkerProc], tiny_bundle_dir: Path,
) -> None:
    cluster = LocalCluster.start(tmp_path / "cluster", node_timeout_ms=2000)
    try:
        s = make_settings(redis_cluster=True, redis_url=cluster.url)
        items = list(load_bundle(tiny_bundle_dir).vocab.ids)
        w = start_worker(s, tiny_bundle_dir)
        rng = random.Random(3)
        users = [f"user-{u}" for u in range(300)]
        history: dict[str, list[str]] = {}
        now = int(time.time() * 1000)
        first = [r for step in range(2) for r in _clicks(history, step, items, rng, users, now)]
        asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, first))
        w.wait_events(len(first))

        # six more events per user, sent while a master goes down and its replica takes over
        rounds = [_clicks(history, step, items, rng, users, now) for step in range(2, 8)]
        sent = threading.Event()

        def send() -> None:
            for k, batch in enumerate(rounds):
                asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, batch))
                if k == 0:
                    sent.set()
                time.sleep(0.5)

        sender = threading.Thread(target=send)
        sender.start()
        assert sent.wait(30)
        # the seed node itself, when it is a master: the clients must find the others
        victim = cluster.ports[0] if cluster.ports[0] in cluster.masters() else cluster.masters()[0]
        cluster.kill_master(victim)
        t0 = time.monotonic()
        cluster.wait_ok(60)
        failover_s = time.monotonic() - t0
        sender.join(60)
        total = len(first) + sum(len(b) for b in rounds)
        w.wait_events(total, timeout=180)
        assert w.alive, w.tail()

        seed = cluster.node_url(cluster.live()[0])
        reader = RecsReader.from_url(seed, s.key_prefix, cluster=True)
        _check_lists(reader, history, s.top_n)
        assert w.alive and victim not in cluster.masters()
        # the writes did meet the failover: some batch's write waited through it
        metrics = dict(line.rsplit(" ", 1) for line in w.get("/metrics")[1].decode().splitlines()
                       if line.startswith(("streamrec_redis_write_seconds",
                                           "streamrec_redis_retries_total")))
        slow = (float(metrics["streamrec_redis_write_seconds_count"])
                - float(metrics['streamrec_redis_write_seconds_bucket{le="1.0"}']))
        retried = metrics['streamrec_redis_retries_total{operation="list_write"}']
        print(f"failover {failover_s:.1f} s; writes over 1 s: {slow:.0f}; worker retries: {retried}")
        assert slow >= 1
    finally:
        cluster.stop()
