"""Build training sequences from the clicks topic itself (the log the workers consume).

Reads every partition from the beginning (or from the first record at/after
``since_ms``) up to the job's start time (:func:`streamrec.kafka.drain`), so the
job terminates on a live topic. Each user's clicks stay in partition order (a
user's events share one partition). A record is kept exactly when a worker
would apply it: the same validation (:func:`streamrec.events.decode_event`,
with the workers' size limit) and the same duplicate rule
(:func:`streamrec.session.already_applied`: a redelivered offset, or an id
among the user's last ``dedup_window``), from the same :class:`SessionRules`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from streamrec.errors import DataError, EventError
from streamrec.events import decode_event
from streamrec.kafka import Kafka, drain, partition_reader
from streamrec.session import Session, SessionRules, already_applied, apply_event
from training.data.sequences import SequenceData, from_id_sequences


@dataclass
class TopicRead:
    data: SequenceData
    records: int
    invalid: int
    duplicates: int


async def read_topic(kafka: Kafka, topic: str, since_ms: int | None = None,
                     rules: SessionRules | None = None) -> TopicRead:
    """Sequences as the workers applied them (``rules``: default, the settings' defaults)."""
    rules = rules or SessionRules.defaults()
    consumer, tps = await partition_reader(kafka, topic, since_ms=since_ms)
    seqs: dict[str, list[str]] = defaultdict(list)
    sessions: dict[str, Session] = {}
    records = invalid = dups = 0
    try:
        async for m in drain(consumer, tps):
            if since_ms is not None and m.timestamp < since_ms:
                continue  # offsets_for_times is approximate on some brokers
            records += 1
            try:
                ev = decode_event(m.key, m.value, rules.max_event_bytes)
            except EventError:
                invalid += 1
                continue
            state = sessions.get(ev.user_id)
            if state is not None and already_applied(state, ev.event_id, m.partition, m.offset):
                dups += 1
                continue
            # max_len=1: the session only tracks ids and offsets here; the items go to seqs
            sessions[ev.user_id] = apply_event(state, ev.event_id, ev.item_id, ev.ts, 1,  # type: ignore[assignment]
                                               rules.dedup_window, m.partition, m.offset)
            seqs[ev.user_id].append(ev.item_id)
    finally:
        await consumer.stop()
    if not seqs:
        raise DataError(f"no valid click events in topic {topic!r}")
    users = sorted(seqs)
    return TopicRead(from_id_sequences(topic, users, [seqs[u] for u in users]), records, invalid, dups)
