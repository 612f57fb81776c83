"""The live catalogue online: the items topic, a real worker, the real broker and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from cli.waiting import poll_until
from serving.bundle import load_bundle
from serving.catalogue import Catalogue
from serving.funnel import recommend
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.items import ItemRecord, encode_item
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.conftest import TINY
from tests.integration.conftest import WorkerProc, consume
from training.data.synthetic import generate, item_attributes

pytestmark = pytest.mark.integration


def wait_metric(w: WorkerProc, name: str, value: float, timeout: float = 30) -> None:
    poll_until(lambda: w.metric(name, default=-1.0), lambda v: v == value, timeout=timeout, procs=[w.proc],
               what=f"{name} == {value}", interval=0.1)


def item(item_id: str, attributes: list[str], available: bool = True) -> tuple[bytes, bytes]:
    return item_id.encode(), encode_item(ItemRecord(item_id, int(time.time() * 1000), attributes,
                                                    available))


def test_a_new_item_is_retrieved_without_retraining_and_a_withdrawn_one_leaves_every_list(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_tower_bundle: Path,
) -> None:
    s = make_settings(top_n=20)
    bundle = load_bundle(tiny_tower_bundle)
    attrs, data = item_attributes(TINY), generate(TINY)
    w = start_worker(s, tiny_tower_bundle)
    # a brand-new item whose content is that of an item many sessions head to
    histories = {f"cu{u}": bundle.vocab.decode(seq[:-1])[-6:] for u, seq in enumerate(data.seqs[:40])}
    target = bundle.vocab.decode([data.seqs[0][-1]])[0]
    asyncio.run(send_raw(s.kafka_bootstrap, s.items_topic, [
        item("brand-new", attrs[target]),
        (b"bad", b'{"item_id":"bad","ts":"noon"}'),  # dead-lettered, the listener goes on
    ]))
    wait_metric(w, "streamrec_live_items", 1)
    # what the served bundle gives each user with the new item live (the same code, offline)
    live = Catalogue().apply([ItemRecord("brand-new", 0, attrs[target])], bundle)
    expected = {u: r.items for u, r in zip(histories, recommend(bundle, list(histories.values()),
                                                                 s.top_n, live=live), strict=True)}
    finders = [u for u, items in expected.items() if "brand-new" in items]
    assert finders, "the tiny tower retrieves the new item for none of these users"
    now = int(time.time() * 1000)
    clicks = [(u.encode(), encode_event(ClickEvent(f"{u}/{k}", u, i, now)))
              for u, h in histories.items() for k, i in enumerate(h)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))
    w.wait_events(len(clicks))
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in finders:
        got = reader.get_recommendations(u)
        assert got is not None and got.items == expected[u], u

    # withdraw the new item and the item most lists hold: gone from every list written after
    counts: dict[str, int] = {}
    for items in expected.values():
        for i in items:
            counts[i] = counts.get(i, 0) + 1
    popular = max((i for i in counts if i != "brand-new"), key=lambda i: counts[i])
    asyncio.run(send_raw(s.kafka_bootstrap, s.items_topic,
                         [item("brand-new", attrs[target], False), item(popular, [], False)]))
    wait_metric(w, "streamrec_live_items", 0)
    time.sleep(0.5)
    more = [(u.encode(), encode_event(ClickEvent(f"{u}/again", u, h[0], now + 1)))
            for u, h in histories.items()]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, more))
    w.wait_events(len(clicks) + len(more))
    for u in histories:
        got = reader.get_recommendations(u)
        assert got is not None and got.last_event_id == f"{u}/again"
        assert "brand-new" not in got.items and popular not in got.items, u
        assert len(got.items) == s.top_n

    letters = [orjson.loads(v) for _, v in consume(s.kafka_bootstrap, s.dlq_topic, 1)]
    assert [x["key"] for x in letters] == ["bad"] and letters[0]["topic"] == s.items_topic
    assert letters[0]["timestamp"] > 1_700_000_000_000 and letters[0]["headers"] == []  # aiokafka's ms


def test_the_catalogue_survives_a_restart(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_tower_bundle: Path,
) -> None:
    s = make_settings()
    attrs = item_attributes(TINY)
    w = start_worker(s, tiny_tower_bundle)
    asyncio.run(send_raw(s.kafka_bootstrap, s.items_topic,
                         [item(f"new-{n}", attrs[str(n + 1)]) for n in range(3)]))
    wait_metric(w, "streamrec_live_items", 3)
    w.stop()
    again = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), tiny_tower_bundle)
    wait_metric(again, "streamrec_live_items", 3)  # read back from the compacted topic


def test_the_new_item_slot_shows_a_new_item_to_every_user_at_its_position(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_tower_bundle: Path,
) -> None:
    from serving.rerank import RerankConfig

    s = make_settings(top_n=5, rerank_new_item_slot=2)
    bundle = load_bundle(tiny_tower_bundle)
    attrs, data = item_attributes(TINY), generate(TINY)
    w = start_worker(s, tiny_tower_bundle)
    asyncio.run(send_raw(s.kafka_bootstrap, s.items_topic, [item("fresh-1", attrs["1"])]))
    wait_metric(w, "streamrec_live_items", 1)
    histories = {f"su{u}": bundle.vocab.decode(seq[:-1])[-4:] for u, seq in enumerate(data.seqs[:20])}
    now = int(time.time() * 1000)
    clicks = [(u.encode(), encode_event(ClickEvent(f"{u}/{k}", u, i, now)))
              for u, h in histories.items() for k, i in enumerate(h)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))
    w.wait_events(len(clicks))
    live = Catalogue().apply([ItemRecord("fresh-1", 0, attrs["1"])], bundle)
    expected = recommend(bundle, list(histories.values()), s.top_n, live=live,
                         rules=RerankConfig(new_item_slot=2))
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u, want in zip(histories, expected, strict=True):
        got = reader.get_recommendations(u)
        assert got is not None and got.items == want.items and got.reasons == want.reasons, u
        # the only new item: in the first three places of every list, at the slot unless it
        # scored higher on its own
        assert "fresh-1" in got.items[:3] and got.reasons[got.items.index("fresh-1")] == "new_item"
