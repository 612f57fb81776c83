"""The conditional Redis write against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from serving.keys import SCHEMA_VERSION
from serving.lists import Provenance, Ranked
from serving.reader import RecsReader
from serving.store import RecsWriter
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_lists_are_ordered_by_epoch_then_seq_never_by_event_time(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def write(epoch: int, seq: int, ts: int, tag: str) -> int:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60)
            return await w.write([(Provenance("u", seq, f"e{seq}", ts), Ranked([tag], [1.0], "model"))],
                                 "v1", epoch, 0, "w", {}, {})
        finally:
            await client.aclose()

    reader = RecsReader.from_url(url, prefix)
    assert asyncio.run(write(3, 5, 1000, "a")) == 1
    assert asyncio.run(write(3, 4, 5000, "old")) == 0  # fewer events applied: refused, newer ts or not
    assert asyncio.run(write(2, 9, 9000, "zombie")) == 0  # an earlier owner's epoch: refused
    assert reader.get_recommendations("u").items == ["a"]  # type: ignore[union-attr]
    assert asyncio.run(write(3, 5, 1000, "again")) == 1  # same event: idempotent rewrite allowed
    # an out-of-order event (older timestamp) applied after: its list is written
    assert asyncio.run(write(3, 6, 10, "late-ts")) == 1
    # a later owner (session rebuilt from scratch, seq restarted): written
    assert asyncio.run(write(4, 1, 20, "fresh")) == 1
    r = reader.get_recommendations("u")
    assert r is not None and r.items == ["fresh"] and r.seq == 1 and r.epoch == 4
    assert r.schema == SCHEMA_VERSION  # every write carries the layout version
    ttl = reader.client.pttl(f"{prefix}recs:u")
    assert 0 < ttl <= 60_000
    reader.client.delete(f"{prefix}recs:u", f"{prefix}workers")


def test_retried_batch_write_counts_once(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def run() -> int:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60)
            lists = [(Provenance("u", 1, "e1", 5), Ranked(["x"], [1.0], "model"))]
            for _ in range(3):  # the first try reached Redis; the retries must not add again
                await w.write(lists, "v1", 1, 0, "w", {"events": 7}, {}, batch_id="b1")
            await w.write(lists, "v1", 1, 0, "w", {"events": 2}, {}, batch_id="b2")
            h = await client.hgetall(f"{prefix}worker:w")
            return int(h[b"events"])
        finally:
            keys = await client.keys(f"{prefix}*")
            await client.delete(*keys)
            await client.aclose()

    assert asyncio.run(run()) == 9


def test_write_survives_a_flushed_script_cache(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def run() -> int:
        client = aioredis.Redis.from_url(url)
        try:
            await client.script_flush()
            w = RecsWriter(client, prefix, ttl_s=60)
            n = await w.write([(Provenance("u", 1, "e1", 5), Ranked(["x"], [1.0], "model"))],
                              "v1", 1, 0, "w", {"events": 1}, {}, batch_id="b")
            assert int(await client.hget(f"{prefix}worker:w", "events")) == 1  # counted once
            return n
        finally:
            await client.delete(*await client.keys(f"{prefix}*"))
            await client.aclose()

    assert asyncio.run(run()) == 1
