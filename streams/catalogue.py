"""The worker's side of the live catalogue: the ``items`` topic, read in full by every worker.

Like model updates (:mod:`streams.hotswap`), with no consumer group: every
worker assigns all partitions and reads from the beginning, so each holds the
whole catalogue, and a restarted worker rebuilds it from the (compacted) topic.
On start it reads up to the end before the click agent begins; then it follows
the topic. Each poll's records are applied at once (:class:`serving.catalogue.Catalogue`)
and the new snapshot replaces the old one in one assignment. A record that does
not decode goes to the dead-letter topic with its reason (when it arrives; see
:meth:`ItemUpdates.apply`), and the listener goes on.

A bundle swap rebuilds the snapshot for the new bundle (``on_swap``): its tower
re-embeds every item it was not trained on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from serving.bundle import ModelBundle
from serving.catalogue import Catalogue
from streamrec.errors import EventError
from streamrec.items import ItemRecord, decode_item
from streamrec.kafka import drain, partition_reader
from streamrec.settings import Settings
from streams.batch import DeadLetter, Record
from streams.hotswap import ModelHolder
from streams.prometheus import WorkerMetrics

log = logging.getLogger(__name__)

SendDead = Callable[[Sequence[DeadLetter]], Awaitable[None]]


class ItemUpdates:
    """The items-topic listener (one per worker process)."""

    def __init__(self, settings: Settings, holder: ModelHolder, catalogue: Catalogue,
                 send_dead: SendDead, metrics: WorkerMetrics) -> None:
        self.settings, self.holder, self.catalogue = settings, holder, catalogue
        self.send_dead, self.metrics = send_dead, metrics
        self.ready = asyncio.Event()  # the topic was read to its end once

    async def run(self) -> None:
        topic = self.settings.items_topic
        consumer, tps = await partition_reader(
            self.settings, topic, default_partitions=set(range(self.settings.topic_partitions)),
            fetch_max_wait_ms=int(self.settings.fetch_max_wait_s * 1000))  # as the clicks
        try:
            pending: list[Any] = []
            async for m in drain(consumer, tps):
                pending.append(m)
            await self.apply(pending, dead_letter=False)
            self.ready.set()
            log.info("catalogue: %d item records read from %s, %d new items live, %d withdrawn",
                     len(self.catalogue.records), topic, self.catalogue.live.size,
                     len(self.catalogue.live.blocked_ids))
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                records = [m for msgs in batch.values() for m in msgs]
                if records:
                    await self.apply(records)
        finally:
            self.ready.set()  # never hold the click agent on a listener that ended
            await consumer.stop()

    async def apply(self, messages: Sequence[Any], dead_letter: bool = True) -> None:
        """Decode ``messages`` (aiokafka records), dead-letter the bad ones, apply the rest.

        A worker re-reads the whole topic at every start: bad records met then were
        dead-lettered when they arrived (by every worker running then; their origin,
        partition and offset, tells the copies apart), so they are counted and
        logged, not sent again (``dead_letter=False``)."""
        good: list[ItemRecord] = []
        dead: list[DeadLetter] = []
        for m in messages:
            try:
                good.append(decode_item(m.key, m.value, self.settings.max_event_bytes))
            except EventError as e:
                dead.append(DeadLetter(Record(m.key, m.value, m.topic, m.partition, m.offset,
                                              _seconds(m.timestamp), m.headers), e.reason, e.kind))
        if dead:
            for d in dead:
                self.metrics.dead_lettered.labels(f"item_{d.kind}").inc()
            log.warning("items: %d bad record(s)%s, first: %s", len(dead),
                        " dead-lettered" if dead_letter else " (read again at start)", dead[0].reason)
            if dead_letter:
                await self.send_dead(dead)
        if not good:
            return
        bundle = self.holder.current if self.holder.loaded else None
        live = self.catalogue.apply(good, bundle)
        now = time.time() * 1000
        for r in good:
            self.metrics.item_to_live.observe(max(0.0, (now - r.ts) / 1000))
        self.metrics.live_items.set(live.size)

    def on_swap(self, bundle: ModelBundle) -> None:
        """Re-embed the catalogue for a newly served bundle (before its first batch)."""
        live = self.catalogue.rebuild(bundle)
        self.metrics.live_items.set(live.size)
        if self.catalogue.records:
            log.info("catalogue rebuilt for %s: %d new items live, %d not embeddable",
                     bundle.version, live.size, live.unembedded)


def _seconds(timestamp_ms: int | None) -> float | None:
    """aiokafka's record timestamp (ms) as Faust gives it (s)."""
    return None if timestamp_ms is None or timestamp_ms < 0 else timestamp_ms / 1000
