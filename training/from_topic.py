"""Build training sequences from the clicks topic itself (the log the workers consume).

Reads every partition from the beginning (or from the first record at/after
``since_ms``) up to the job's start time (:func:`streams.drain.drain`), so the
job terminates on a live topic. Each user's clicks stay in partition order (a user's events share
one partition), invalid records are skipped and counted, and an event id seen
before for a user is dropped, exactly as the workers do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.errors import DataError, EventError
from streamrec.kafka import Kafka, client_kwargs
from streams.drain import drain
from streams.events import decode_event
from training.data import SequenceData, from_id_sequences


@dataclass
class TopicRead:
    data: SequenceData
    records: int
    invalid: int
    duplicates: int


async def read_topic(kafka: Kafka, topic: str, since_ms: int | None = None,
                     max_event_bytes: int = 1 << 20) -> TopicRead:
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), enable_auto_commit=False, group_id=None)
    where = client_kwargs(kafka)["bootstrap_servers"]
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # also refreshes metadata
            raise DataError(f"topic {topic!r} does not exist on {where}")
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise DataError(f"topic {topic!r} does not exist on {where}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if since_ms is None:
            await consumer.seek_to_beginning(*tps)
        else:
            starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            await consumer.seek_to_end(*tps)
            for tp in tps:
                if (found := starts.get(tp)) is not None:
                    consumer.seek(tp, found.offset)
        seqs: dict[str, list[str]] = defaultdict(list)
        seen: dict[str, set[str]] = defaultdict(set)
        records = invalid = dups = 0
        async for m in drain(consumer, tps):
            if since_ms is not None and m.timestamp < since_ms:
                continue  # offsets_for_times is approximate on some brokers
            records += 1
            try:
                ev = decode_event(m.key, m.value, max_event_bytes)
            except EventError:
                invalid += 1
                continue
            if ev.event_id in seen[ev.user_id]:
                dups += 1
                continue
            seen[ev.user_id].add(ev.event_id)
            seqs[ev.user_id].append(ev.item_id)
    finally:
        await consumer.stop()
    if not seqs:
        raise DataError(f"no valid click events in topic {topic!r}")
    users = sorted(seqs)
    return TopicRead(from_id_sequences(topic, users, [seqs[u] for u in users]), records, invalid, dups)
