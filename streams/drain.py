"""Reading a topic "up to now", robust to brokers whose end offsets are approximate.

Some Kafka-protocol brokers (Tansu, seen here) report end offsets that undercount
batched records, so "read until the end offsets" stops early. A partition is
done when either a record stamped after ``until_ms`` arrives (it is not
yielded), or a poll returns nothing once the reported end offset is reached.
That terminates on a live topic and loses nothing on an idle one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def drain(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                until_ms: int | None = None, idle_ms: int = 300) -> AsyncIterator[ConsumerRecord]:
    """Yield every record of ``tps`` from the current positions up to ``until_ms`` (default: now)."""
    until = until_ms if until_ms is not None else int(time.time() * 1000)
    end = await consumer.end_offsets(tps)
    active = set(tps)
    while active:
        batch = await consumer.getmany(*active, timeout_ms=idle_ms)
        for tp, msgs in batch.items():
            for m in msgs:
                if m.timestamp > until:
                    active.discard(tp)
                    break
                yield m
        for tp in list(active):
            if not batch.get(tp) and await consumer.position(tp) >= end[tp]:
                active.discard(tp)
