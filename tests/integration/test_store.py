"""The conditional Redis write against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from serving.keys import SCHEMA_VERSION
from serving.list_types import Provenance, Ranked
from serving.reader import RecsReader
from serving.redis_store import LISTS_PER_CALL, RecsWriter
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_lists_are_ordered_by_epoch_then_seq_never_by_event_time(services: None) -> None:
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def write(epoch: int, seq: int, ts: int, tag: str) -> int:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60)
            return sum(await w.write([(Provenance("u", seq, f"e{seq}", ts), Ranked([tag], [1.0], "model"))],
                                 "v1", epoch, 0, "w", {}, {}))
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


def test_one_batch_decides_each_list_on_its_own(services: None) -> None:
    """A batch is one script call, but each list keeps its own condition: the older
    ones are refused, the rest written with their own fields, and the count says so."""
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    async def run() -> tuple[int, int]:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60)
            first = sum(await w.write([(Provenance(u, 5, f"{u}-5", 50), Ranked([f"{u}-a"], [1.0], "model"))
                                       for u in ("a", "b", "c")], "v1", 3, 0, "w", {}, {}))
            lists = [(Provenance("a", 4, "a-4", 40), Ranked(["a-old"], [0.5], "model")),  # older seq
                     (Provenance("b", 6, "b-6", 60), Ranked(["b-new", "x"], [0.9, 0.1], "trending",
                                                            ["trending", "fresh"])),
                     (Provenance("d", 1, "d-1", 10), Ranked(["d-new"], [0.3], "model"))]  # new key
            return first, sum(await w.write(lists, "v2", 3, 7, "w", {}, {}))
        finally:
            await client.aclose()

    assert asyncio.run(run()) == (3, 2)
    reader = RecsReader.from_url(url, prefix)
    a, b, c, d = (reader.get_recommendations(u) for u in "abcd")
    assert a is not None and a.items == ["a-a"] and a.seq == 5 and a.model_version == "v1"
    assert b is not None and b.items == ["b-new", "x"] and b.seq == 6 and b.model_version == "v2"
    assert b.reasons == ["trending", "fresh"] and b.last_event_id == "b-6" and b.source == "trending"
    assert c is not None and c.items == ["c-a"] and c.model_version == "v1"
    assert d is not None and d.items == ["d-new"] and d.seq == 1 and d.epoch == 3
    assert 0 < reader.client.pttl(f"{prefix}recs:d") <= 60_000
    reader.client.delete(*[f"{prefix}recs:{u}" for u in "abcd"], f"{prefix}workers")


def test_a_batch_longer_than_one_script_call_writes_every_list(services: None) -> None:
    """Batches go to Redis in chunks of ``LISTS_PER_CALL`` lists: every chunk's lists
    are decided and counted, the last partial one included."""
    url = Settings().redis_url.get_secret_value()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    n = 2 * LISTS_PER_CALL + 7
    users = [f"u{i}" for i in range(n)]

    async def run() -> tuple[int, int]:
        client = aioredis.Redis.from_url(url)
        try:
            w = RecsWriter(client, prefix, ttl_s=60)
            first = sum(await w.write([(Provenance(u, 2, f"{u}-2", 2), Ranked([f"{u}-a"], [1.0], "model"))
                                       for u in users], "v1", 1, 0, "w", {}, {}))
            # every third list is older than the stored one
            again = [(Provenance(u, 1 if i % 3 == 0 else 3, f"{u}-b", 3), Ranked([f"{u}-b"], [1.0], "model"))
                     for i, u in enumerate(users)]
            flags = await w.write(again, "v1", 1, 0, "w", {}, {})
            assert flags == [i % 3 != 0 for i in range(len(users))]  # the older ones refused
            return first, sum(flags)
        finally:
            await client.aclose()

    assert asyncio.run(run()) == (n, n - len(range(0, n, 3)))
    reader = RecsReader.from_url(url, prefix)
    for i, u in enumerate(users):
        got = reader.get_recommendations(u)
        assert got is not None and got.items == ([f"{u}-a"] if i % 3 == 0 else [f"{u}-b"])
    reader.client.delete(*[f"{prefix}recs:{u}" for u in users], f"{prefix}workers")


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
            n = sum(await w.write([(Provenance("u", 1, "e1", 5), Ranked(["x"], [1.0], "model"))],
                                  "v1", 1, 0, "w", {"events": 1}, {}, batch_id="b"))
            assert int(await client.hget(f"{prefix}worker:w", "events")) == 1  # counted once
            return n
        finally:
            await client.delete(*await client.keys(f"{prefix}*"))
            await client.aclose()

    assert asyncio.run(run()) == 1
