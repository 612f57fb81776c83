"""Click load at a fixed offered rate (or as fast as possible), timestamps = send time."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from streamrec.events import ClickEvent, encode_event
from streamrec.kafka import Kafka
from streams.replay import send_paced


async def produce(kafka: Kafka, topic: str, *, events: int, rate: float | None, users: int,
                  items: int | Sequence[str], run: str, seed: int = 0) -> float:
    """Send ``events`` clicks (random users and items) at ``rate``/s; returns seconds taken.

    ``items``: the item ids to click (a served bundle's vocabulary, so every click is an
    item the model knows), or a count ``n`` for the ids ``i1`` … ``in``."""
    rng = np.random.default_rng(seed)
    user_ids = rng.integers(0, users, events).tolist()
    n = items if isinstance(items, int) else len(items)
    draws = rng.integers(1, n + 1, events).tolist()
    item_ids = [f"i{i}" for i in draws] if isinstance(items, int) else [items[i - 1] for i in draws]

    def records() -> Iterator[tuple[bytes, bytes]]:
        for n, (u, i) in enumerate(zip(user_ids, item_ids, strict=True)):
            ev = ClickEvent(f"{run}/{n}", f"u{u}", i, int(time.time() * 1000))
            yield ev.user_id.encode(), encode_event(ev)

    _, seconds = await send_paced(kafka, topic, records(), rate)
    return seconds
