"""Training data read back from the clicks topic: per-user order, duplicates and junk dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from streamrec.events import ClickEvent, encode_event
from streamrec.session import SessionRules
from streamrec.settings import Settings
from streams.replay import replay, send_raw
from training.data.from_topic import read_topic
from training.data.synthetic import SyntheticSpec, generate

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


def test_read_topic_keeps_exactly_what_the_workers_apply(make_settings: Callable[..., Settings]) -> None:
    """One rule for both: the workers' size limit and duplicate window (SessionRules)."""
    s = make_settings(dedup_window=2, max_event_bytes=200)

    def ev(eid: str, item: str, pad: int = 0) -> tuple[bytes, bytes]:
        value = encode_event(ClickEvent(eid, "u", item, 1_000))
        return b"u", value[:-1] + b',"pad":"' + b"x" * pad + b'"}' if pad else value

    records = [ev("e0", "a"), ev("e1", "b"), ev("e2", "c"),
               ev("e2", "c"),  # inside the window of 2 ids: a duplicate
               ev("e0", "a"),  # older than the window: applied again, as a worker would
               ev("e3", "d", pad=300)]  # over the workers' 200-byte limit: invalid
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    read = asyncio.run(read_topic(s.kafka_bootstrap, s.clicks_topic,
                                  rules=SessionRules.from_settings(s)))
    assert (read.records, read.invalid, read.duplicates) == (6, 1, 1)
    assert read.data.vocab.decode(read.data.seqs[0]) == ["a", "b", "c", "a"]
