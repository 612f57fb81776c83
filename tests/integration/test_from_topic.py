"""Training data read back from the clicks topic: per-user order, duplicates and junk dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import replay, send_raw
from training.from_topic import read_topic
from training.synthetic import SyntheticSpec, generate

pytestmark = pytest.mark.integration


def test_read_topic_rebuilds_the_replayed_sequences(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    data = generate(SyntheticSpec(users=60, items=50, clusters=5, mean_len=8, seed=11))
    seqs = [data.vocab.decode(x) for x in data.seqs]
    asyncio.run(replay(s.kafka_bootstrap, s.clicks_topic, data.users, seqs))
    dup = ClickEvent(f"{data.users[0]}:0", data.users[0], seqs[0][0], 1)  # same id as a replayed one
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic,
                         [(b"x", b"{junk"), (dup.user_id.encode(), encode_event(dup))]))
    read = asyncio.run(read_topic(s.kafka_bootstrap, s.clicks_topic))
    assert read.invalid == 1 and read.duplicates == 1
    assert read.records == data.num_interactions + 2
    got = dict(zip(read.data.users, (read.data.vocab.decode(x) for x in read.data.seqs), strict=True))
    assert got == dict(zip(data.users, seqs, strict=True))


def test_read_topic_since_skips_older_events(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    old = [(b"u", encode_event(ClickEvent(f"o{i}", "u", f"old{i}", 1_000 + i))) for i in range(3)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, old))
    import time

    cut = int(time.time() * 1000)
    time.sleep(0.05)
    new = [(b"u", encode_event(ClickEvent(f"n{i}", "u", f"new{i}", cut + i))) for i in range(2)]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, new))
    read = asyncio.run(read_topic(s.kafka_bootstrap, s.clicks_topic, since_ms=cut))
    assert read.data.vocab.decode(read.data.seqs[0]) == ["new0", "new1"]
