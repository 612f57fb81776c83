"""The worker's Kafka consumer: Faust's aiokafka consumer with three corrections.

1. **Fetch wait** (configurable; Faust hard-codes 1500 ms). On Apache Kafka a
   fetch returns as soon as any record is available, so the wait only bounds
   idle polls. Some Kafka-protocol brokers (Tansu, measured here) hold every
   fetch for the full wait: with 1500 ms the median event-to-consumer latency
   was 400 ms, with 20 ms it was 7.6 ms.

2. **No records lost at the end of a recovery.** After a rebalance Faust
   restores the tables with the fetch loop running, then resumes the stream
   partitions and seeks them back to their committed offsets
   (``Recovery.on_recovery_completed``). The fetch loop can still be handing
   records fetched *before* the seek to the streams while the seek is under
   way: each one sets the partition's read offset after the seek has set it,
   the queue clear that follows drops the records themselves, and the records
   fetched again from the committed offset are then below the read offset and
   dropped as already read (Faust logs "DROPPED MESSAGE ROFF" at dev level).
   Seen here: after a worker joined, 43 records of each of two partitions were
   never processed, and events later in the same partitions were, so sessions
   missed events (``tests/faults``: a worker joining and leaving). The fix:
   stop the flow and let the fetch loop finish the records in hand before the
   seek. Every caller of ``perform_seek`` resumes the flow right after it.
   Records a fetch returns while the flow is stopped are not in hand: Faust
   drops them and seeks from inside the fetch loop, which must not wait for
   itself (it did, for the whole timeout, after most rebalances).
   A partition without a committed offset is not moved by the seek at all, so
   it goes back to its first record (``_seek_uncommitted_to_start``); seen
   here: a worker that took over a paused worker's partitions before their
   first commit never delivered their records.

3. **Commits go on past a hole after a partition's first record.** Faust records
   a gap between two delivered offsets so that commits can step over offsets that
   are never delivered (an aborted transaction's records and its marker, read
   committed), but it tests the last offset read for truth, so a hole right after
   offset 0 is never recorded, and every later commit of that partition waits for
   offsets that never come (``_new_offset`` returns None until a rebalance). The
   gap after offset 0 is recorded here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)

#: logged when a seek stops waiting for the fetch loop (records may then be lost)
SEEK_GAVE_UP = "seeking anyway"


class SafeSeekConsumer(driver.Consumer):
    """Faust's aiokafka consumer whose seeks to committed offsets never race record delivery."""

    #: how long a seek waits for the fetch loop to finish the records in hand
    settle_timeout_s = 5.0
    _delivering = False  # the fetch loop holds fetched records it may still deliver

    async def _wait_next_records(self, timeout: float) -> Any:
        self._delivering = False
        records, active = await super()._wait_next_records(timeout)
        # Faust's getmany delivers these only if the flow is still active now (it reads
        # ``flow_active`` next, with no await between); otherwise it drops them and seeks
        # to the committed offsets itself, from inside the fetch loop. Counting those as
        # in hand made that seek wait on the fetch loop, i.e. on itself: a 5 s stall of
        # all consumption after a rebalance (7 times in 4 of 6 runs of the paused-worker
        # fault scenario).
        self._delivering = bool(records) and self.flow_active
        return records, active

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for tp, message in super().getmany(timeout):
            # Faust's fetch loop sets the read offset after each record it handles, before
            # it takes the next from here, and records gaps itself after any offset but 0.
            # After 0 the first commit is 1; a next record at 2 commits on by itself, one
            # at 3 or later waits for the offsets between unless they are a gap.
            if (self._read_offset.get(tp) == 0 and message.offset > 2
                    and self.app.topics.acks_enabled_for(message.topic)):
                await self._add_gap(tp, 1, message.offset - 1)
            yield tp, message

    async def perform_seek(self) -> None:
        if self.flow_active:
            self.stop_flow()  # getmany stops at the next record; the caller resumes the flow
        deadline = time.monotonic() + self.settle_timeout_s
        while self._delivering and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self._delivering:
            log.warning("the fetch loop still held records %.0fs after the flow stopped; %s",
                        self.settle_timeout_s, SEEK_GAVE_UP)
        await super().perform_seek()
        await self._seek_uncommitted_to_start()

    async def _seek_uncommitted_to_start(self) -> None:
        """Seek stream partitions that have no committed offset back to their first record.

        aiokafka's ``seek_to_committed`` leaves a partition without a committed offset
        where it is, and that is past any records fetched and then dropped during the
        rebalance (Faust's getmany drops the rest of a fetch when the generation changes
        under it). Without a commit the reset policy says where to start: with
        ``earliest`` (ours), the beginning; redelivered records are recognised by offset.
        """
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return
        uncommitted = [tp for tp in self.assignment()
                       if not self._is_changelog_tp(tp) and self.app.topics.acks_enabled_for(tp.topic)
                       and not self._committed_offset.get(tp)]
        if uncommitted:
            log.info("no committed offset for %s: reading them from the start",
                     ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(uncommitted)))
            await self._thread.seek_to_beginning(*(TopicPartition(tp.topic, tp.partition)
                                                     for tp in uncommitted))
            for tp in uncommitted:
                self._read_offset[tp] = None


def consumer_overrides(fetch_max_wait_ms: int, group_instance_id: str | None = None,
                       isolation_level: str = "read_committed") -> dict[str, Any]:
    """The worker consumer's attributes that Faust has no setting for, each read by
    ``AIOKafkaConsumer.start()``: the fetch wait, Kafka static membership
    (``group_instance_id``) and the isolation level (Faust reads committed records only
    in its own exactly-once mode)."""
    if isolation_level not in ("read_committed", "read_uncommitted"):
        raise ValueError(f"isolation_level must be read_committed or read_uncommitted, not {isolation_level!r}")
    return {"_fetch_max_wait_ms": fetch_max_wait_ms, "_group_instance_id": group_instance_id,
            "_isolation_level": isolation_level}


def install_consumer(fetch_max_wait_ms: int, group_instance_id: str | None = None,
                     isolation_level: str = "read_committed") -> None:
    """Make Faust's aiokafka transport build our consumer (process-wide: one app per worker)
    with :func:`consumer_overrides`."""
    overrides = consumer_overrides(fetch_max_wait_ms, group_instance_id, isolation_level)

    class Thread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            for name, value in overrides.items():
                if not hasattr(consumer, name):  # an aiokafka that renamed it: fail loudly
                    raise RuntimeError(f"aiokafka's consumer has no attribute {name}")
                setattr(consumer, name, value)
            return consumer

    class Consumer(SafeSeekConsumer):
        def _new_consumer_thread(self) -> Thread:
            return Thread(self, loop=self.loop, beacon=self.beacon)

    driver.Transport.Consumer = Consumer
