"""Turn a dataset into click events on the clicks topic (the real ingest path).

Events go out in each user's order, interleaved across users (every user's
1st click, then every user's 2nd, …), keyed by user id. Event ids are
``{prefix}{user}:{position}``, so replaying the same data with the same prefix
is idempotent for the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from streams.events import ClickEvent, encode_event


@dataclass(frozen=True)
class ReplayStats:
    sent: int
    seconds: float
    first_ts: int
    last_ts: int


def interleave(users: Sequence[str], seqs: Sequence[Sequence[str]]) -> Iterator[tuple[str, int, str]]:
    """(user, position, item) in round-robin order over users."""
    longest = max((len(s) for s in seqs), default=0)
    for pos in range(longest):
        for u, s in zip(users, seqs, strict=True):
            if pos < len(s):
                yield u, pos, s[pos]


async def replay(bootstrap: str, topic: str, users: Sequence[str], seqs: Sequence[Sequence[str]],
                 *, rate: float | None = None, id_prefix: str = "", limit: int | None = None) -> ReplayStats:
    """Send the events; ``rate`` in events/s (None = as fast as possible)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                                max_batch_size=256 * 1024)
    await producer.start()
    start = time.monotonic()
    sent, first_ts, last_ts = 0, 0, 0
    pending: list[asyncio.Future] = []
    try:
        for user, pos, item in interleave(users, seqs):
            if limit is not None and sent >= limit:
                break
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0.001:
                    await asyncio.sleep(ahead)
            ts = int(time.time() * 1000)
            ev = ClickEvent(event_id=f"{id_prefix}{user}:{pos}", user_id=user, item_id=item, ts=ts)
            pending.append(await producer.send(topic, encode_event(ev), key=user.encode()))
            first_ts = first_ts or ts
            last_ts = ts
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ReplayStats(sent, time.monotonic() - start, first_ts, last_ts)


async def send_raw(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Send raw (key, value) records as they are: for malformed-input demos and tests."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        # per-partition order is kept: aiokafka sends each partition's batches in sequence
        await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in records])
    finally:
        await producer.stop()
