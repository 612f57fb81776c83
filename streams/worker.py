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

from serving.bundle import ModelBundle
from serving.catalogue import Catalogue, CatalogueView
from serving.experiments import INTERLEAVE, INTERLEAVED_ARM, Arm, Experiment, assign, team_draft
from serving.funnel import Batch, Funnel
from serving.list_types import Ranked
from serving.online import DEFAULT_ARM, Observed, OnlineMetrics, Shown
from serving.redis_store import RecsWriter
from serving.trending import TrendingCache, clicks_by_item
from streamrec.errors import EventError
from streamrec.impressions import Impression, decode_impression, encode_impression
from streamrec.logs import RateLimitedLog
from streamrec.session import SessionRules
from streams.batch import BatchOutcome, DeadLetter, EndOffsets, Record, Sessions, apply_batch
from streams.fencing import Fencing
from streams.hotswap import LiveExperiment, ModelHolder
from streams.log_resets import LogMarks
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
    marks: LogMarks = field(default_factory=LogMarks)  # the partitions' log generations
    end_offset: EndOffsets = lambda topic, partition: None  # a partition's high watermark


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
        self._funnels: dict[tuple[str | None, float | None], Funnel] = {}  # arms' overrides

    async def prepare(self, events: Sequence[Any]) -> BatchOutcome:
        """Validate and apply a batch to session state, dead-letter the bad records.

        Runs on the event loop, batch after batch in consumption order: this is the
        step that must be ordered. What it returns is what ``finish`` needs.
        """
        taken = time.monotonic()
        records = [Record(m.key, e.value, m.topic, m.partition, m.offset, m.timestamp, m.headers)
                   for e in events for m in (e.message,)]
        epoch = await self.ctx.fencing.current()
        out = apply_batch(self.ctx.table, records, self.ctx.rules, epoch, self.ctx.marks,
                          self.ctx.end_offset)
        m = self.ctx.metrics
        m.stages.add_batch("apply", (time.monotonic() - taken) * 1000, len(records))
        self._stage_arrivals(events, taken)
        for reset in out.resets:
            log.error("%s", reset.describe())
            m.log_resets.labels(str(reset.partition)).inc()
            self.ctx.status.report({"log_resets": self.ctx.marks.resets,
                                    "last_log_reset": reset.describe()[:300]})
        m.events.inc(len(records))
        m.batch_size.observe(len(records))
        m.applied.inc(len(out.applied_ts))
        m.duplicates.inc(out.duplicates)
        if out.dead:
            await self.dead_letter(out.dead)
            for d in out.dead:
                m.dead_lettered.labels(d.kind).inc()
        return out

    def _stage_arrivals(self, events: Sequence[Any], taken: float) -> None:
        """The delivery and batching stages of a batch's events (``streams.prometheus``):
        record timestamp → the loop has it (Faust's monitor stamps ``time_in``, monotonic)
        → the batch is taken at ``taken``."""
        arrived = np.fromiter((e.message.time_in or taken for e in events), dtype=np.float64,
                              count=len(events))
        created = np.fromiter((e.message.timestamp or 0.0 for e in events), dtype=np.float64,
                              count=len(events))
        wall = time.time() - time.monotonic()  # monotonic -> wall clock, now
        stages = self.ctx.metrics.stages
        known = created > 0
        stages.add("delivery", (arrived[known] + wall - created[known]) * 1000)
        stages.add("batching", (taken - arrived) * 1000)

    async def dead_letter(self, dead: Sequence[DeadLetter]) -> None:
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
                futures = [await self.ctx.dlq.send(key=d.key,
                                               value=d.encode(self.ctx.worker_id, self.ctx.dead_letter_max_bytes))
                           for d in dead]
                await asyncio.gather(*futures)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any producer failure: hold and say so
                failures += 1
                self.ctx.metrics.dead_letter_failures.inc()
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

    async def shown_reports(self, events: Sequence[Any]) -> int:
        """Applications' reports of what they displayed (impressions with ``shown``): the
        user's held list is narrowed to them, so the next click is judged against what was
        shown. Bad records are dead-lettered; the worker's own written impressions are
        skipped. Returns the reports that matched a held list."""
        m, online = self.ctx.metrics, self.ctx.online
        dead, matched = [], 0
        for e in events:
            msg = e.message
            try:
                imp = decode_impression(msg.key, e.value, self.ctx.rules.max_event_bytes)
            except EventError as err:
                dead.append(DeadLetter(Record(msg.key, e.value, msg.topic, msg.partition, msg.offset,
                                              msg.timestamp, msg.headers), err.reason, err.kind))
                continue
            if imp.shown is None:
                continue
            m.shown_reports.inc()
            if online is not None and online.displayed(imp.user_id, imp.list_id, imp.shown):
                matched += 1
        m.shown_matched.inc(matched)
        if dead:
            await self.dead_letter(dead)
            for d in dead:
                m.dead_lettered.labels(d.kind).inc()
        return matched

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
        bundle = self.ctx.model.current  # one version (and experiment) for the whole batch
        live_exp = self.ctx.model.experiment
        funnel = self.ctx.funnel
        if bundle.version != self._described:
            self._described = bundle.version
            log.info("%s", funnel.describe(bundle))
        users = list(out.touched)
        online = self.ctx.online
        observed = None
        if online is not None:  # against the lists held before this batch's
            observed = online.observe(zip(out.clickers, out.clicked, out.click_lists, strict=True))
        lists = Lists([], [], [], [])
        if users:
            groups = self._groups(users, out, bundle, live_exp)
            histories = [out.histories[u] for u in users]
            t0 = time.perf_counter()
            lists = await asyncio.get_running_loop().run_in_executor(
                self.ctx.executor, compute_lists, groups, histories, self.ctx.trending.items,
                live_exp.experiment if live_exp is not None else None, users, out)
            self.ctx.metrics.compute.observe(took := time.perf_counter() - t0)
            self.ctx.metrics.stages.add_batch("compute", took * 1000, n_records)
            self._count_encoder_cache(groups, bundle)
        ranked = lists.ranked
        now_ms = int(time.time() * 1000)
        batch_id = f"{self._run}:{next(self._batch_ids)}"
        list_ids = [f"{batch_id}.{n}" for n in range(len(users))]
        t0 = time.perf_counter()
        counted = experiment_sums(observed) if observed is not None else None
        written = await retry_transient(lambda: self.ctx.writer.write(
            [(out.touched[u], r) for u, r in zip(users, ranked, strict=True)],
            model_version=lists.versions,
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
            arms=lists.arms,
            experiments=counted,
        ), what="list write")
        self.ctx.metrics.redis_write.observe(took := time.perf_counter() - t0)
        self.ctx.metrics.stages.add_batch("redis", took * 1000, n_records)
        self.ctx.metrics.lists_written.inc(sum(written))
        stored = [n for n, ok in enumerate(written) if ok]  # the rest lost to newer lists
        name = live_exp.experiment.name if live_exp is not None else ""
        shown = [(users[n], Shown(tuple(ranked[n].items), lists.versions[n], lists.arms[n],
                                  list_ids[n], name if lists.arms[n] != DEFAULT_ARM else "",
                                  lists.teams[n])) for n in stored]
        deliveries: list[asyncio.Future[Any]] = []
        if self.ctx.impressions is not None:
            deliveries = await self._send_impressions(shown, [ranked[n] for n in stored], now_ms)
        if online is not None:
            online.remember_shown(shown)
        if out.applied_ts:  # event time -> Redis write acknowledged, per applied event
            self.ctx.metrics.latency.add(int(time.time() * 1000) - np.asarray(out.applied_ts, dtype=np.int64))
        return deliveries

    def _count_encoder_cache(self, groups: Sequence[Group], fleet: ModelBundle) -> None:
        """The step encoders' outcomes for this batch, and the fleet bundle's cache size."""
        m = self.ctx.metrics
        for step in {id(g.bundle.step): g.bundle.step for g in groups if g.bundle.step is not None}.values():
            for outcome, n in step.take_counts().items():
                if n:
                    m.encoder_cache.labels(outcome).inc(n)
        if fleet.step is not None:
            m.encoder_cache_bytes.set(fleet.step.bytes)
            m.encoder_cache_users.set(len(fleet.step))

    def _groups(self, users: Sequence[str], out: BatchOutcome, bundle: ModelBundle,
                live_exp: LiveExperiment | None) -> list[Group]:
        """Which rows each bundle and funnel computes: all with the fleet's bundle when no
        experiment runs; per arm (A/B); every row with both arms (interleaving)."""
        catalogue = self.ctx.catalogue
        if live_exp is None:
            return [Group(DEFAULT_ARM, bundle, self.ctx.funnel, catalogue.live,
                          list(range(len(users))))]
        exp = live_exp.experiment
        rows: dict[str, list[int]] = {a.name: [] for a in exp.arms}
        if exp.mode == INTERLEAVE:
            for r in rows.values():
                r.extend(range(len(users)))
        else:
            for n, u in enumerate(users):
                rows[assign(exp, u).name].append(n)
        return [Group(a.name, live_exp.bundles[a.name], self._funnel(a),
                      catalogue.view_for(live_exp.bundles[a.name]), rows[a.name])
                for a in exp.arms if rows[a.name]]

    def _funnel(self, arm: Arm) -> Funnel:
        key = (arm.ranker, arm.mmr_lambda)
        f = self._funnels.get(key)
        if f is None:
            f = self._funnels[key] = Funnel(self.ctx.funnel.config.with_overrides(*key))
        return f

    async def _send_impressions(self, shown: Sequence[tuple[str, Shown]],
                                ranked: Sequence[Ranked], now_ms: int,
                                ) -> list[asyncio.Future[Any]]:
        """One impression record per list written (keyed by user), handed to the producer;
        the deliveries are returned for the ack to wait on (:class:`Pipeline`), so the next
        batch does not wait for them, and an impression is lost only with its list."""
        # Straight to the app's producer (the bytes are final; the topic is a raw one):
        # Faust's topic.send wraps each record in a message future with callbacks, a cost
        # per list that the impressions benchmark showed (docs/benchmarks.md).
        topic = self.ctx.impressions
        send, name = topic.app.producer.send, topic.get_topic_name()
        return [await send(name, u.encode(), encode_impression(Impression(
                    list_id=s.list_id or "", user_id=u, ts=now_ms, items=r.items,
                    reasons=r.reasons, arm=s.arm, model_version=s.model_version,
                    experiment=s.experiment or None, teams=list(s.teams) or None)),
                    None, None, None)
                for (u, s), r in zip(shown, ranked, strict=True)]


@dataclass(frozen=True)
class Group:
    """Rows of a batch that one bundle and funnel compute (an arm's, or the fleet's)."""

    arm: str
    bundle: ModelBundle
    funnel: Funnel
    live: CatalogueView
    rows: list[int]


@dataclass(frozen=True)
class Lists:
    """A batch's lists, and per list the model version, the arm and the teams that made it."""

    ranked: list[Ranked]
    versions: list[str]
    arms: list[str]
    teams: list[tuple[str, ...]]


def compute_lists(groups: Sequence[Group], histories: Sequence[Sequence[str]],
                  trending: Sequence[str], exp: Experiment | None, users: Sequence[str],
                  out: BatchOutcome) -> Lists:
    """Run each group's funnel on its rows (blocking: the compute thread). An interleaving
    experiment merges its two arms' lists per user by team draft, seeded by the
    experiment's salt, the user and the session's event count."""
    n = len(histories)
    by_arm: dict[str, list[Ranked | None]] = {}
    for g in groups:
        got = g.funnel.run(g.bundle, Batch(
            [histories[r] for r in g.rows], trending, g.live, users=[users[r] for r in g.rows],
            counts=[out.touched[users[r]].seq for r in g.rows]))
        mine: list[Ranked | None] = [None] * n
        for r, one in zip(g.rows, got, strict=True):
            mine[r] = one
        by_arm[g.arm] = mine
    version = {g.arm: g.bundle.version for g in groups}
    if exp is not None and exp.mode == INTERLEAVE:
        (a, ra), (b, rb) = by_arm.items()
        top_n = groups[0].funnel.config.top_n
        merged = [team_draft({a: x, b: y}, top_n,
                             f"{exp.key_salt}:{users[r]}:{out.touched[users[r]].seq}")
                  for r, (x, y) in enumerate(zip(ra, rb, strict=True)) if x is not None and y is not None]
        both = f"{version[a]}|{version[b]}"
        return Lists([m.ranked for m in merged], [both] * n, [INTERLEAVED_ARM] * n,
                     [m.teams for m in merged])
    ranked: list[Ranked] = []
    versions: list[str] = []
    arms: list[str] = []
    for r in range(n):
        arm = next(g.arm for g in groups if by_arm[g.arm][r] is not None)
        row = by_arm[arm][r]
        assert row is not None
        ranked.append(row)
        versions.append(version[arm])
        arms.append(arm)
    return Lists(ranked, versions, arms, [()] * n)


def experiment_sums(observed: Observed) -> dict[str, dict[str, float]]:
    """An experiment's Redis count fields from one batch: ``{arm}:{sum}`` per arm and
    ``{team}:wins`` per team-draft win, by experiment."""
    out: dict[str, dict[str, float]] = {}
    for (name, arm), c in observed.arms.items():
        fields = out.setdefault(name, {})
        for f, v in c.fields().items():
            fields[f"{arm}:{f}"] = v
    for (name, team), wins in observed.wins.items():
        out.setdefault(name, {})[f"{team}:wins"] = wins
    return out


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
