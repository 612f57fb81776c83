"""The conditional Redis write against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from serving.reader import RecsReader
from serving.recommend import Ranked
from serving.store import Provenance, RecsWriter
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_older_events_never_overwrite_newer_lists(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def write(seq: int, ts: int, tag: str) -> int:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60)
            return await w.write([(Provenance("u", seq, f"e{seq}", ts), Ranked([tag], [1.0], "model"))],
                                 "v1", 0, "w", {}, {})
        finally:
            await client.aclose()

    reader = RecsReader.from_url(url, prefix)
    assert asyncio.run(write(5, 1000, "a")) == 1
    assert asyncio.run(write(4, 999, "old")) == 0  # older event: refused
    assert asyncio.run(write(4, 1000, "old")) == 0  # same ms, lower seq: refused
    assert reader.get_recommendations("u").items == ["a"]  # type: ignore[union-attr]
    assert asyncio.run(write(5, 1000, "again")) == 1  # same event: idempotent rewrite allowed
    # session rebuilt from scratch (seq restarted) with a newer event: written
    assert asyncio.run(write(1, 2000, "fresh")) == 1
    r = reader.get_recommendations("u")
    assert r is not None and r.items == ["fresh"] and r.seq == 1
    ttl = reader.client.pttl(f"{prefix}recs:u")
    assert 0 < ttl <= 60_000
    reader.client.delete(f"{prefix}recs:u", f"{prefix}workers")


def test_write_survives_a_flushed_script_cache(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def run() -> int:
        client = aioredis.Redis.from_url(url)
        try:
            await client.script_flush()
            w = RecsWriter(client, prefix, ttl_s=60)
            n = await w.write([(Provenance("u", 1, "e1", 5), Ranked(["x"], [1.0], "model"))],
                              "v1", 0, "w", {"events": 1}, {})
            assert int(await client.hget(f"{prefix}worker:w", "events")) == 1  # counted once
            return n
        finally:
            await client.delete(f"{prefix}recs:u", f"{prefix}worker:w", f"{prefix}workers")
            await client.aclose()

    assert asyncio.run(run()) == 1
