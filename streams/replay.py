"""Turn a dataset into click events on the clicks topic (the real ingest path).

Events go out in each user's order, interleaved across users (every user's
1st click, then every user's 2nd, …), keyed by user id. Event ids are
``{prefix}{user}:{position}``, so replaying the same data with the same prefix
is idempotent for the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from aiokafka import AIOKafkaProducer

from streamrec.events import ClickEvent, encode_event
from streamrec.kafka import Kafka, client_kwargs


@dataclass(frozen=True)
class ReplayStats:
    sent: int
    seconds: float


def interleave(users: Sequence[str], seqs: Sequence[Sequence[str]]) -> Iterator[tuple[str, int, str]]:
    """(user, position, item) in round-robin order over users."""
    longest = max((len(s) for s in seqs), default=0)
    for pos in range(longest):
        for u, s in zip(users, seqs, strict=True):
            if pos < len(s):
                yield u, pos, s[pos]


async def send_paced(kafka: Kafka, topic: str, records: Iterable[tuple[bytes, bytes]],
                     rate: float | None = None) -> tuple[int, float]:
    """Send (key, value) records at ``rate``/s (None = as fast as possible), in order.

    ``records`` is consumed lazily, so a generator can stamp each event at send time.
    Returns (records sent, seconds).
    """
    producer = AIOKafkaProducer(**client_kwargs(kafka), linger_ms=2, acks=1,
                                max_batch_size=256 * 1024)
    await producer.start()
    start = time.monotonic()
    sent = 0
    pending: list[asyncio.Future[object]] = []
    try:
        for key, value in records:
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0.0005:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent, time.monotonic() - start


async def replay(kafka: Kafka, topic: str, users: Sequence[str], seqs: Sequence[Sequence[str]],
                 *, rate: float | None = None, id_prefix: str = "", limit: int | None = None) -> ReplayStats:
    """Send the events; ``rate`` in events/s (None = as fast as possible)."""
    def events() -> Iterator[tuple[bytes, bytes]]:
        for user, pos, item in islice(interleave(users, seqs), limit):
            ts = int(time.time() * 1000)  # stamped at send time
            yield user.encode(), encode_event(ClickEvent(f"{id_prefix}{user}:{pos}", user, item, ts))

    sent, seconds = await send_paced(kafka, topic, events(), rate)
    return ReplayStats(sent, seconds)


async def send_raw(kafka: Kafka, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Send raw (key, value) records as they are: for malformed-input demos and tests."""
    producer = AIOKafkaProducer(**client_kwargs(kafka), linger_ms=5)
    await producer.start()
    try:
        # per-partition order is kept: aiokafka sends each partition's batches in sequence
        await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in records])
    finally:
        await producer.stop()
