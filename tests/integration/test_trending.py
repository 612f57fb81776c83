"""Trending against a real Redis and a real worker (serving.trending)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from serving.bundle import load_bundle
from serving.reader import RecsReader
from serving.redis_store import RecsWriter
from serving.trending import landmark_key, parse_top, trending_key
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def test_clicks_decay_count_once_per_batch_rescale_and_trim(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    sync = redis.Redis.from_url(url)

    async def add(batch: str, now_ms: int, clicked: dict[str, int], keep: int = 100) -> None:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60, trending_half_life_s=3600,
                           trending_max_items=keep)
            await w.write([], "v1", 1, now_ms, "w", {}, {}, batch_id=batch, clicked=clicked)
        finally:
            await client.aclose()

    def top(now_ms: int) -> tuple[list[str], list[float]]:
        raw = sync.zrevrange(trending_key(prefix), 0, -1, withscores=True)
        t = parse_top(raw, sync.get(landmark_key(prefix)), now_ms, HOUR)  # type: ignore[arg-type]
        return t.items, t.counts

    try:
        t0 = 1_800_000_000_000
        asyncio.run(add("b1", t0, {"old": 3, "mid": 1}))
        asyncio.run(add("b1", t0, {"old": 3, "mid": 1}))  # a retried pipeline: added once
        asyncio.run(add("b2", t0 + 4 * HOUR, {"new": 1}))
        items, counts = top(t0 + 4 * HOUR)
        assert items == ["new", "old", "mid"]  # one click now > three four half-lives ago
        assert counts == pytest.approx([1.0, 3 / 16, 1 / 16])
        # 100 half-lives on: the set is rescaled, the landmark moves, nothing overflows
        asyncio.run(add("b3", t0 + 100 * HOUR, {"later": 2}))
        assert int(sync.get(landmark_key(prefix))) == t0 + 100 * HOUR  # type: ignore[arg-type]
        assert top(t0 + 100 * HOUR) == (["later"], [pytest.approx(2.0)])  # the rest is history
        asyncio.run(add("b4", t0 + 100 * HOUR, {f"i{n}": 1 for n in range(10)}, keep=5))
        assert sync.zcard(trending_key(prefix)) == 5  # the set keeps its top max_items
        assert top(t0 + 100 * HOUR)[0][0] == "later"
    finally:
        sync.delete(*sync.keys(f"{prefix}*") or ["-"])


def test_a_user_without_usable_history_gets_what_is_trending(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings()
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    hot, warm = items[-1], items[-2]  # the least popular items of training: now trending
    w = start_worker(s, tiny_bundle_dir)
    now = int(time.time() * 1000)
    clicks = [(f"fan{u}".encode(), encode_event(ClickEvent(f"fan{u}/{k}", f"fan{u}", item, now)))
              for u in range(20) for k, item in enumerate([hot, warm] if u < 5 else [hot])]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))
    w.wait_events(len(clicks))
    time.sleep(2 * s.trending_refresh_s + 0.5)  # the worker re-reads trending once a second
    # a new user whose one click the model does not know (a brand-new item)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [
        (b"newbie", encode_event(ClickEvent("newbie/0", "newbie", "not-in-the-model", now)))]))
    w.wait_events(len(clicks) + 1)
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    r = reader.get_recommendations("newbie")
    assert r is not None and r.source == "trending"
    assert r.items[:2] == [hot, warm] and len(r.items) == s.top_n
    assert "not-in-the-model" not in r.items
