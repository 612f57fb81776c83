"""Click load at a fixed offered rate (or as fast as possible), timestamps = send time."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiokafka import AIOKafkaProducer

from streams.events import ClickEvent, encode_event


async def produce(bootstrap: str, topic: str, *, events: int, rate: float | None, users: int,
                  items: int, run: str, seed: int = 0) -> float:
    """Send ``events`` clicks (random users and items) at ``rate``/s; returns seconds taken."""
    rng = np.random.default_rng(seed)
    user_ids = rng.integers(0, users, events).tolist()
    item_ids = rng.integers(1, items + 1, events).tolist()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    await producer.start()
    start = time.monotonic()
    pending = []
    try:
        for n, (u, i) in enumerate(zip(user_ids, item_ids, strict=True)):
            if rate:
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0.0005:
                    await asyncio.sleep(ahead)
            ev = ClickEvent(f"{run}/{n}", f"u{u}", f"i{i}", int(time.time() * 1000))
            pending.append(await producer.send(topic, encode_event(ev), key=ev.user_id.encode()))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - start
