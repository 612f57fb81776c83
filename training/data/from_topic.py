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

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamrec.errors import DataError, EventError
from streamrec.events import decode_event
from streamrec.impressions import decode_impression
from streamrec.kafka import Kafka, drain, partition_reader
from streamrec.session import Session, SessionRules, already_applied, apply_event
from training.data.sequences import SequenceData, from_id_sequences


@dataclass(frozen=True)
class Click:
    """One applied click as the trainer needs it to find the list shown before it."""

    item: str
    ts: int
    list_id: str | None = None


@dataclass
class TopicRead:
    data: SequenceData
    records: int
    invalid: int
    duplicates: int
    # per user (in ``data.users`` order), the applied clicks with their times and list ids
    clicks: list[list[Click]] = field(default_factory=list)


@dataclass
class Impressions:
    """The impressions topic, read: the written lists, what applications reported shown,
    and each user's lists in time order."""

    written: dict[str, list[str]] = field(default_factory=dict)  # list_id -> items
    shown: dict[str, list[str]] = field(default_factory=dict)  # list_id -> displayed items
    by_user: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # user -> [(ts, list_id)]
    records: int = 0
    invalid: int = 0

    def add(self, list_id: str, user_id: str, ts: int, items: list[str] | None,
            shown: list[str] | None) -> None:
        if shown is not None:
            self.shown[list_id] = list(shown)
            return
        assert items is not None
        if list_id not in self.written:
            bisect.insort(self.by_user.setdefault(user_id, []), (ts, list_id))
        self.written[list_id] = list(items)

    def held(self, user_id: str, click: Click) -> str | None:
        """The list the user held just before ``click``: the one it names if known, else
        the user's latest list written strictly before the click's time."""
        if click.list_id is not None and (click.list_id in self.written or click.list_id in self.shown):
            return click.list_id
        lists = self.by_user.get(user_id, [])
        i = bisect.bisect_left(lists, (click.ts, ""))
        return lists[i - 1][1] if i else None

    def displayed(self, list_id: str, top_k: int) -> list[str]:
        """What the user saw of a list: the application's report, else the written list's top ``top_k``."""
        if list_id in self.shown:
            return self.shown[list_id]
        return self.written.get(list_id, [])[:top_k]


def impression_negatives(clicks: Sequence[Click], user_id: str, imps: Impressions, top_k: int = 10,
                         window_ms: int | None = None) -> list[list[str]]:
    """Per click, the items of the list the user held before it that were shown and not
    clicked: not the clicked item, and not clicked later within ``window_ms`` after it
    (``None``: only the step itself counts). The first click's list is found as well (the
    trainer uses only positions that are targets)."""
    out: list[list[str]] = []
    for j, c in enumerate(clicks):
        lid = imps.held(user_id, c)
        if lid is None:
            out.append([])
            continue
        clicked = {c.item}
        if window_ms is not None:
            clicked.update(d.item for d in clicks[j + 1:] if d.ts - c.ts <= window_ms)
        seen: set[str] = set()
        negs = []
        for it in imps.displayed(lid, top_k):
            if it not in clicked and it not in seen:
                seen.add(it)
                negs.append(it)
        out.append(negs)
    return out


def encode_negatives(data: SequenceData, clicks: Sequence[Sequence[Click]], imps: Impressions,
                     top_k: int = 10, window_ms: int | None = None) -> list[list[list[int]]]:
    """:func:`impression_negatives` for every user of ``data``, as item indexes (items
    outside the vocabulary, i.e. never clicked, are dropped: the model has no vector for them)."""
    index: Mapping[str, int] = {it: i for i, it in enumerate(data.vocab.ids, 1)}
    out = []
    for user, cs in zip(data.users, clicks, strict=True):
        negs = impression_negatives(cs, user, imps, top_k, window_ms)
        out.append([[index[i] for i in n if i in index] for n in negs])
    return out


async def read_impressions(kafka: Kafka, topic: str, since_ms: int | None = None,
                           max_bytes: int = 16_384) -> Impressions:
    """The impressions topic up to the job's start; invalid records (per
    :func:`streamrec.impressions.decode_impression`) are counted and skipped. A topic that
    does not exist reads as empty."""
    imps = Impressions()
    try:
        consumer, tps = await partition_reader(kafka, topic, since_ms=since_ms)
    except DataError:
        return imps
    try:
        async for m in drain(consumer, tps):
            if since_ms is not None and m.timestamp < since_ms:
                continue
            imps.records += 1
            try:
                imp = decode_impression(m.key, m.value, max_bytes)
            except EventError:
                imps.invalid += 1
                continue
            imps.add(imp.list_id, imp.user_id, imp.ts, imp.items, imp.shown)
    finally:
        await consumer.stop()
    return imps


async def read_topic(kafka: Kafka, topic: str, since_ms: int | None = None,
                     rules: SessionRules | None = None) -> TopicRead:
    """Sequences as the workers applied them (``rules``: default, the settings' defaults)."""
    rules = rules or SessionRules.defaults()
    consumer, tps = await partition_reader(kafka, topic, since_ms=since_ms)
    seqs: dict[str, list[str]] = defaultdict(list)
    clicks: dict[str, list[Click]] = defaultdict(list)
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
            clicks[ev.user_id].append(Click(ev.item_id, ev.ts, ev.list_id))
    finally:
        await consumer.stop()
    if not seqs:
        raise DataError(f"no valid click events in topic {topic!r}")
    users = sorted(seqs)
    return TopicRead(from_id_sequences(topic, users, [seqs[u] for u in users]), records, invalid, dups,
                     [clicks[u] for u in users])
