"""How the broker's offset lookups and fetches scale with a partition's log.

A restarting worker asks the broker for its partitions' offsets (the changelog's
high watermarks and starts, the clicks' committed positions) and then fetches
from where it left off. On Apache Kafka both use the log's index and cost the
same at any log length. ``streamrec bench-broker`` measures it on whatever broker
``STREAMREC_KAFKA_BOOTSTRAP`` names: for each size N it writes N records to a
one-partition topic of its own, each record its own batch (as the local
workers write their changelog), then times a ListOffsets round trip (latest and
earliest) and a fetch of the last record.

The records are written with librdkafka (``confluent-kafka``, the ``dev`` extra),
which writes a million one-record batches in minutes where a Python producer
takes far longer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from streamrec.errors import ConfigError
from streamrec.kafka import client_kwargs
from streamrec.settings import Settings

PROBES = 5


@dataclass
class BrokerResult:
    records: int
    load_s: float  # writing the records
    list_offsets_ms: float  # latest + earliest, median of PROBES round trips
    fetch_last_ms: float  # seek to the last record and fetch it
    fetched: bool  # the fetch returned the record within the timeout

    def row(self) -> str:
        fetch = f"{self.fetch_last_ms:8.1f} ms" if self.fetched else f"> {self.fetch_last_ms:6.0f} ms"
        return (f"{self.records:>10,d} one-record batches (written in {self.load_s:5.0f} s): "
                f"list offsets {self.list_offsets_ms:8.1f} ms, fetch the last record {fetch}")


def _load(settings: Settings, topic: str, records: int) -> float:
    try:
        from confluent_kafka import Producer
    except ImportError:
        raise ConfigError("bench-broker needs confluent-kafka (the dev extra: make venv)") from None
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0,
                  "batch.num.messages": 1, "enable.idempotence": False, "acks": 1,
                  "queue.buffering.max.messages": 200_000})
    value = b"x" * 100
    t = time.monotonic()
    for i in range(records):
        while True:
            try:
                p.produce(topic, value=value, key=f"u{i}".encode())
                break
            except BufferError:  # the local queue is full: let deliveries drain
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError(f"bench-broker: records to {topic} not delivered in 120 s")
    return time.monotonic() - t


async def _probe(settings: Settings, topic: str, timeout_s: float) -> tuple[float, float, bool]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        times = []
        end: dict[TopicPartition, int] = {}
        for _ in range(PROBES):
            t = time.perf_counter()
            end = await c.end_offsets([tp])
            await c.beginning_offsets([tp])
            times.append((time.perf_counter() - t) * 1000)
        c.assign([tp])
        c.seek(tp, max(end[tp] - 1, 0))
        t = time.perf_counter()
        got = await c.getmany(tp, timeout_ms=int(timeout_s * 1000))
        fetch_ms = (time.perf_counter() - t) * 1000
        return sorted(times)[PROBES // 2], fetch_ms, bool(got.get(tp))
    finally:
        await c.stop()


def measure(settings: Settings, records: int, fetch_timeout_s: float = 30.0) -> BrokerResult:
    """Write ``records`` one-record batches to a new one-partition topic, then probe it."""
    from streamrec.kafka import ensure_topics

    topic = f"bench-broker-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(settings.model_copy(update={"topic_partitions": 1}), [topic]))
    load_s = _load(settings, topic, records)
    list_ms, fetch_ms, fetched = asyncio.run(_probe(settings, topic, fetch_timeout_s))
    return BrokerResult(records, round(load_s, 1), round(list_ms, 1), round(fetch_ms, 1), fetched)

