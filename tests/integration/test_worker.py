"""The core loop against the real broker and Redis: events in, fresh lists out."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from serving.bundle import load_bundle
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc, consume

pytestmark = pytest.mark.integration


def click(user: str, eid: str, item: str, ts: int = 1_700_000_000_000) -> tuple[bytes, bytes]:
    return user.encode(), encode_event(ClickEvent(eid, user, item, ts))


def test_every_user_list_reflects_last_event_and_excludes_seen(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings()
    version = load_bundle(tiny_bundle_dir).version
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    w = start_worker(s, tiny_bundle_dir)
    rng = random.Random(5)
    history: dict[str, list[str]] = {}
    records = []
    for step in range(6):
        for u in range(150):
            user = f"user-{u}"
            item = rng.choice(items) if (u + step) % 7 else f"unknown-{step}"  # some out-of-vocab
            history.setdefault(user, []).append(item)
            records.append(click(user, f"{user}/{step}", item))
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    st = w.wait_events(len(records))
    assert int(st["applied"]) == len(records) and int(st.get("dead_lettered", 0)) == 0

    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for user, seen in history.items():
        r = reader.get_recommendations(user)
        assert r is not None, user
        assert r.last_event_id == f"{user}/5" and r.seq == 6
        assert r.model_version == version
        assert len(r.items) == s.top_n
        assert not set(r.items) & set(seen), f"{user} got a seen item"
        assert r.generated_at >= r.last_event_ts


def test_malformed_events_go_to_dead_letter_and_good_ones_still_flow(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings(max_event_bytes=2048)
    item = load_bundle(tiny_bundle_dir).vocab.ids[0]
    w = start_worker(s, tiny_bundle_dir)
    bad = [
        (b"u-bad", b"{this is not json"),
        (b"u-bad", b'{"event_id": "x1", "user_id": "u-bad", "ts": 5}'),
        (b"u-bad", b'{"event_id": "x2", "user_id": "u-bad", "item_id": "i", "ts": "noon"}'),
        (b"u-bad", b'{"event_id": "x3", "user_id": "u-bad", "item_id": "i", "ts": 1, "pad": "'
                   + b"x" * 3000 + b'"}'),
    ]
    records = [click("good-1", "g1", item)] + bad[:2] + [click("good-2", "g2", item)] + bad[2:] + \
        [click("good-1", "g3", item)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    traced = b'{"event_id": "x4", "user_id": "u-bad"}'  # the record's own time and headers are kept

    async def send_traced() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(s.clicks_topic, traced, key=b"u-bad", timestamp_ms=1_700_000_000_123,
                                         headers=[("trace-id", b"t-1"), ("empty", b"")])
        finally:
            await producer.stop()

    asyncio.run(send_traced())
    st = w.wait_events(len(records) + 1)
    assert int(st["dead_lettered"]) == 5 and int(st["applied"]) == 3

    letters = [orjson.loads(v) for _, v in consume(s.kafka_bootstrap, s.dlq_topic, 5)]
    assert len(letters) == 5
    reasons = sorted(x["reason"].split(":")[0] for x in letters)
    assert reasons == [f"event is {len(bad[3][1])} bytes, limit is 2048", "invalid event", "invalid event",
                       "invalid event", "malformed JSON"]
    originals = {base64.b64decode(x["value_b64"]): x for x in letters}
    assert set(originals) == {v for _, v in bad} | {traced}
    assert all(x["topic"] == s.clicks_topic and x["offset"] >= 0 and x["partition"] >= 0
               for x in letters)
    assert originals[traced]["timestamp"] == 1_700_000_000_123
    assert originals[traced]["headers"] == [{"key": "trace-id", "value_b64": base64.b64encode(b"t-1").decode()},
                                            {"key": "empty", "value_b64": ""}]
    assert originals[bad[0][1]]["headers"] == [] and originals[bad[0][1]]["timestamp"] > 1_700_000_000_123
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    assert reader.get_recommendations("good-1").last_event_id == "g3"  # type: ignore[union-attr]
    assert reader.get_recommendations("good-2") is not None
    assert reader.get_recommendations("u-bad") is None


def test_compressed_batches_of_every_kafka_codec_are_applied(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    """Other clients compress their batches (librdkafka's compression.type): the worker
    reads every codec Kafka has, where a codec it could not read stopped it on the batch
    at every restart."""
    from confluent_kafka import Producer

    s = make_settings()
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    w = start_worker(s, tiny_bundle_dir)
    codecs = ("gzip", "snappy", "lz4", "zstd")
    for codec in codecs:
        p = Producer({"bootstrap.servers": s.kafka_bootstrap, "compression.type": codec,
                      "enable.idempotence": False, "linger.ms": 20})
        for k in range(5):
            user = f"{codec}-user"
            p.produce(s.clicks_topic, key=user.encode(),
                      value=encode_event(ClickEvent(f"{codec}/{k}", user, items[k], 1_700_000_000_000 + k)))
        assert p.flush(30) == 0
    st = w.wait_events(5 * len(codecs))
    assert int(st["applied"]) == 5 * len(codecs) and int(st.get("dead_lettered", 0)) == 0
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for codec in codecs:
        r = reader.get_recommendations(f"{codec}-user")
        assert r is not None and r.last_event_id == f"{codec}/4" and r.seq == 5, codec


def test_duplicate_event_does_not_change_state(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings()
    a, b = load_bundle(tiny_bundle_dir).vocab.ids[:2]
    w = start_worker(s, tiny_bundle_dir)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [click("dup", "e1", a), click("dup", "e2", b)]))
    w.wait_events(2)
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    before = reader.get_recommendations("dup")
    assert before is not None and before.seq == 2
    # redeliver e1 (same id, even a different payload) twice
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [click("dup", "e1", a), click("dup", "e1", b)]))
    st = w.wait_events(4)
    assert int(st.get("duplicates", 0)) == 2 and int(st["applied"]) == 2
    after = reader.get_recommendations("dup")
    assert after == before  # not even rewritten
    # redelivery of the latest event (its list may have been lost with a crashed worker)
    # writes the same list again, state unchanged
    time.sleep(0.01)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [click("dup", "e2", b)]))
    st = w.wait_events(5)
    assert int(st["duplicates"]) == 3 and int(st["applied"]) == 2
    again = reader.get_recommendations("dup")
    assert again is not None and again.generated_at > before.generated_at
    assert (again.items, again.seq, again.last_event_id) == (before.items, 2, "e2")


def test_session_state_recovers_from_the_changelog_on_another_worker(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings()
    items = load_bundle(tiny_bundle_dir).vocab.ids
    w1 = start_worker(s, tiny_bundle_dir)
    first = [click(f"r{u}", f"r{u}/{t}", items[t]) for t in range(3) for u in range(20)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, first))
    w1.wait_events(len(first))
    w1.stop()  # graceful: offsets committed, changelog flushed
    w2 = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), tiny_bundle_dir)
    # one redelivered old event per user (must be a duplicate) and one new event
    more = [click(f"r{u}", f"r{u}/1", items[1]) for u in range(20)] + \
        [click(f"r{u}", f"r{u}/3", items[3]) for u in range(20)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, more))
    st = w2.wait_events(len(more))
    assert int(st.get("duplicates", 0)) == 20 and int(st["applied"]) == 20
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in range(20):
        r = reader.get_recommendations(f"r{u}")
        assert r is not None and r.seq == 4 and r.last_event_id == f"r{u}/3"
        assert not set(r.items) & set(items[:4])  # the recovered history is still filtered


def test_a_worker_restarted_under_its_name_keeps_counting(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    # Counters are added once per batch through a token named by the batch's id. A
    # container's worker keeps its name across restarts (same host, pid 1): its batch
    # ids must not repeat the previous life's, or its first hour of counts is dropped.
    s = make_settings()
    items = load_bundle(tiny_bundle_dir).vocab.ids
    w = start_worker(s, tiny_bundle_dir)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic,
                         [click(f"c{u}", f"c{u}/0", items[0]) for u in range(10)]))
    w.wait_events(10)
    w.stop()
    w2 = start_worker(s, tiny_bundle_dir)  # the same worker_id: the same status hash
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic,
                         [click(f"c{u}", f"c{u}/1", items[1]) for u in range(10)]))
    st = w2.wait_events(20)
    assert int(st["events"]) == 20 and int(st["applied"]) == 20
