"""The async shell around the micro-batches: state in order, compute off the loop, one Redis
pipeline per batch, offsets acked only once a batch's lists are written."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.catalogue import Catalogue
from serving.funnel import Batch, Funnel
from serving.list_types import Ranked
from serving.online import DEFAULT_ARM, OnlineMetrics
from serving.redis_store import RecsWriter
from serving.trending import TrendingCache, clicks_by_item
from streamrec.impressions import Impression, encode_impression
from streamrec.logs import RateLimitedLog
from streamrec.session import SessionRules
from streams.batch import BatchOutcome, DeadLetter, Record, Sessions, apply_batch
from streams.fencing import Fencing
from streams.hotswap import ModelHolder
from streams.prometheus import WorkerMetrics
from streams.retry import StatusReporter, retry_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchContext:
    """What a :class:`ClickWorker` works with: the session table, where lists and dead
    letters go, the model, the funnel that turns sessions into lists, and the counters."""

    table: Sessions
    dlq: Any  # faust TopicT: ``await dlq.send(key=…, value=…)``
    model: ModelHolder
    writer: RecsWriter
    executor: Executor  # the compute thread (ONNX Runtime, FAISS)
    fencing: Fencing
    status: StatusReporter
    rules: SessionRules
    funnel: Funnel
    worker_id: str
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    trending: TrendingCache = field(default_factory=TrendingCache)
    catalogue: Catalogue = field(default_factory=Catalogue)
    dead_letter_max_bytes: int = 262_144
    online: OnlineMetrics | None = None  # None: online metrics off
    impressions: Any = None  # faust TopicT of the impressions; None: not sent


class ClickWorker:
    """Handles the batches of one agent. Not shared between agents."""

    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx
        # batch ids name the Redis tokens that make a retried write count once: unique
        # per process, since a restarted worker may keep its name (a container's pid 1)
        self._run = uuid.uuid4().hex[:12]
        self._batch_ids = itertools.count()
        self._dead_log = RateLimitedLog(interval_s=1.0, what="dead-lettered", logger=log)
        self._described: str | None = None  # the bundle version whose funnel was logged

    async def prepare(self, events: Sequence[Any]) -> BatchOutcome:
        """Validate and apply a batch to session state, dead-letter the bad records.

        Runs on the event loop, batch after batch in consumption order: this is the
        step that must be ordered. What it returns is what ``finish`` needs.
        """
        records = [Record(e.message.key, e.value, e.message.topic, e.message.partition,
                          e.message.offset) for e in events]
        epoch = await self.ctx.fencing.current()
        out = apply_batch(self.ctx.table, records, self.ctx.rules, epoch)
        m = self.ctx.metrics
        m.events.inc(len(records))
        m.batch_size.observe(len(records))
        m.applied.inc(len(out.applied_ts))
        m.duplicates.inc(out.duplicates)
        if out.dead:
            await self._dead_letter(out.dead)
            for d in out.dead:
                m.dead_lettered.labels(d.kind).inc()
        return out

    async def _dead_letter(self, dead: Sequence[DeadLetter]) -> None:
        """Send the dead letters and wait until the broker has them (before any ack).

        A dead-letter topic that cannot be written holds the batch: the records
        are neither lost nor acked, and the worker says so on every back-off
        step (log and the ``dead_letter_blocked`` status field) until it can.
        """
        for d in dead:
            self._dead_log.add(f"{d.record.topic}[{d.record.partition}]@{d.record.offset}: "
                               f"{d.reason[:200]}", topic=d.record.topic,
                               partition=d.record.partition, offset=d.record.offset,
                               reason=d.kind)
        delay, failures = 0.1, 0
        while True:
            try:
                futures = [await self.ctx.dlq.send(key=d.record.key,
                                               value=d.encode(self.ctx.worker_id, self.ctx.dead_letter_max_bytes))
                           for d in dead]
                await asyncio.gather(*futures)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any producer failure: hold and say so
                failures += 1
                first = dead[0].record
                log.error("cannot write %d dead letter(s) to %s (attempt %d: %s: %s); holding "
                          "%s[%d] at offset %d, retrying in %.1fs", len(dead), self.ctx.dlq.get_topic_name(),
                          failures, type(e).__name__, e, first.topic, first.partition, first.offset,
                          delay)
                self.ctx.status.report({"dead_letter_blocked": f"{type(e).__name__}: {e}"[:300],
                                    "dead_letter_failures": failures})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                if failures:
                    self.ctx.status.report({"dead_letter_blocked": ""})
                return

    async def finish(self, n_records: int, out: BatchOutcome) -> list[asyncio.Future[Any]]:
        """Compute the touched users' lists off the loop and write them in one pipeline;
        returns the deliveries still pending (impressions) that must land before the
        batch's offsets are acked.

        An error escaping here stops the agent, so a transient Redis failure must
        not escape: the Redis step is retried with backoff until it succeeds (the
        batch's state is already in the table).
        Lists of different batches may reach Redis in any order: the store keeps
        the one from the later event.
        """
        bundle = self.ctx.model.current  # one version for the whole batch
        funnel = self.ctx.funnel
        if bundle.version != self._described:
            self._described = bundle.version
            log.info("%s", funnel.describe(bundle))
        users = list(out.touched)
        ranked = []
        online = self.ctx.online
        if online is not None:  # against the lists held before this batch's
            online.observe(zip(out.clickers, out.clicked, out.click_lists, strict=True))
        if users:
            batch = Batch([out.histories[u] for u in users], self.ctx.trending.items,
                          self.ctx.catalogue.live)
            t0 = time.perf_counter()
            ranked = await asyncio.get_running_loop().run_in_executor(
                self.ctx.executor, funnel.run, bundle, batch)
            self.ctx.metrics.compute.observe(time.perf_counter() - t0)
        now_ms = int(time.time() * 1000)
        batch_id = f"{self._run}:{next(self._batch_ids)}"
        list_ids = [f"{batch_id}.{n}" for n in range(len(users))]
        t0 = time.perf_counter()
        written = await retry_transient(lambda: self.ctx.writer.write(
            [(out.touched[u], r) for u, r in zip(users, ranked, strict=True)],
            model_version=bundle.version,
            epoch=out.epoch,
            batch_id=batch_id,
            generated_at_ms=now_ms,
            worker_id=self.ctx.worker_id,
            counters={
                "events": n_records,
                "applied": len(out.applied_ts),
                "duplicates": out.duplicates,
                "dead_lettered": len(out.dead),
                "lists_written": len(users),
                "batches": 1,
            },
            status={
                "model_version": bundle.version,
                "last_batch_at": now_ms,
                "last_batch_size": n_records,
            },
            clicked=clicks_by_item(out.clicked),
            list_ids=list_ids,
        ))
        self.ctx.metrics.redis_write.observe(time.perf_counter() - t0)
        self.ctx.metrics.lists_written.inc(sum(written))
        stored = [n for n, ok in enumerate(written) if ok]  # the rest lost to newer lists
        deliveries: list[asyncio.Future[Any]] = []
        if self.ctx.impressions is not None:
            deliveries = await self._send_impressions(
                [users[n] for n in stored], [ranked[n] for n in stored],
                [list_ids[n] for n in stored], bundle.version, now_ms)
        if online is not None:
            online.remember(((users[n], ranked[n].items, list_ids[n]) for n in stored),
                            bundle.version)
        if out.applied_ts:  # event time -> Redis write acknowledged, per applied event
            self.ctx.metrics.latency.add(int(time.time() * 1000) - np.asarray(out.applied_ts, dtype=np.int64))
        return deliveries

    async def _send_impressions(self, users: Sequence[str], ranked: Sequence[Ranked],
                                list_ids: Sequence[str], version: str, now_ms: int,
                                ) -> list[asyncio.Future[Any]]:
        """One impression record per list written (keyed by user), handed to the producer;
        the deliveries are returned for the ack to wait on (:class:`Pipeline`), so the next
        batch does not wait for them, and an impression is lost only with its list."""
        topic = self.ctx.impressions
        return [await topic.send(key=u.encode(), value=encode_impression(Impression(
                    list_id=i, user_id=u, ts=now_ms, items=r.items, reasons=r.reasons,
                    arm=DEFAULT_ARM, model_version=version)))
                for u, r, i in zip(users, ranked, list_ids, strict=True)]


class Pipeline:
    """Overlaps a batch's compute and Redis write with taking and applying the next ones.

    ``submit`` applies a batch to state at once (in order), then leaves its
    ``finish`` running while the caller takes the next batch; at most ``depth``
    batches are unfinished at a time (``depth`` 1 is strictly one after another).
    Offsets are committed only for finished batches: each event's message gets an
    extra reference before Faust's own ack after the ``take_events`` body, and
    ``ack`` (the stream's) drops it once the batch's lists are in Redis and its
    impressions, if any, with the broker. Waiting for those deliveries does not hold
    the next batch (they are ``acking``, not in flight). A batch that never
    finishes (crash, shutdown) is redelivered, and a redelivered latest event
    recomputes its user's list (``streams.batch``).
    """

    def __init__(self, worker: ClickWorker, ack: Callable[[Any], Awaitable[Any]], depth: int) -> None:
        self.worker, self.ack, self.depth = worker, ack, depth
        self.inflight: set[asyncio.Task[None]] = set()
        self.acking: set[asyncio.Task[None]] = set()  # finished, waiting on deliveries to ack
        self.error: BaseException | None = None

    async def submit(self, events: Sequence[Any]) -> None:
        self._raise_failed()
        for e in events:
            e.message.incref()
        out = await self.worker.prepare(events)
        task = asyncio.create_task(self._finish(events, out))
        self.inflight.add(task)
        task.add_done_callback(self._done)
        while len(self.inflight) >= self.depth:
            await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failed()

    async def drain(self) -> None:
        """Wait for every submitted batch to finish and be acked; raise the first failure."""
        if self.inflight:
            await asyncio.wait(self.inflight)
        if self.acking:
            await asyncio.wait(self.acking)
        self._raise_failed()

    async def settle(self, timeout: float) -> None:
        """On shutdown: give the batches in flight ``timeout`` s to finish, cancel the rest."""
        if self.inflight or self.acking:
            _, pending = await asyncio.wait(self.inflight | self.acking, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _finish(self, events: Sequence[Any], out: BatchOutcome) -> None:
        deliveries = await self.worker.finish(len(events), out)
        if not deliveries:
            await self._ack(events)
            return
        task = asyncio.create_task(self._ack_when_delivered(events, deliveries))
        self.acking.add(task)
        task.add_done_callback(self._done)

    async def _ack_when_delivered(self, events: Sequence[Any],
                                  deliveries: Sequence[asyncio.Future[Any]]) -> None:
        await asyncio.gather(*deliveries)
        await self._ack(events)

    async def _ack(self, events: Sequence[Any]) -> None:
        for e in events:
            await self.ack(e)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self.acking.discard(task)
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()

    def _raise_failed(self) -> None:
        if self.error is not None:
            raise self.error
