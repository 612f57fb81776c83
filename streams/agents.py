"""What a worker does, as top-level functions over a :class:`WorkerContext`.

* :func:`process_clicks`, the Faust agent over the clicks topic: micro-batches
  go through :class:`streams.worker.Pipeline` (state in order, lists computed
  off the loop, one Redis pipeline per batch, offsets acked after the write).
* :func:`process_impressions`, the Faust agent over the impressions topic (only with
  ``STREAMREC_IMPRESSIONS_SHOWN``): applications' reports of what they displayed.
* :func:`follow_model_updates`, a Faust task: the model-update listener.
* :func:`follow_items`, a Faust task: the items-topic listener (the live catalogue).
* :func:`on_partitions_assigned` and :func:`on_rebalance_complete`: the
  rebalance hooks (a new fencing epoch; the assignment in the worker's status).
* :func:`heartbeat`, a Faust timer: keeps the worker's status hash alive.
* :func:`refresh_trending`, a Faust timer: re-reads the trending fallback list.
* :func:`settle_heap`: once the worker first serves, start-up's objects leave
  the garbage collector's scans.

``streams.app.create_app`` builds the context and registers these with Faust;
a test can build a context of its own and call them directly.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import faiss
import faust
from faust.types import TP
from threadpoolctl import threadpool_limits

from serving.catalogue import Catalogue
from serving.funnel import Funnel
from serving.keys import meta_prefix
from serving.online import OnlineMetrics
from serving.redis_client import AsyncClient
from serving.redis_store import RecsWriter
from serving.trending import TrendingCache
from streamrec.kafka import ensure_topics
from streamrec.session import SessionRules
from streamrec.settings import Settings
from streams.batch import EndOffsets
from streams.catalogue import ItemUpdates
from streams.diagnostics import consumer_lag, consumer_state, install_task_dump
from streams.fencing import Fencing
from streams.hotswap import ModelHolder, ModelUpdates
from streams.log_resets import LogMarks
from streams.prometheus import WorkerMetrics
from streams.retry import StatusReporter
from streams.tables import SessionTable
from streams.topics import Topics
from streams.worker import BatchContext, ClickWorker, Pipeline

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """Everything the agents share in one worker process (built by ``create_app``)."""

    settings: Settings
    topics: Topics
    sessions: SessionTable
    holder: ModelHolder
    updates: ModelUpdates
    writer: RecsWriter
    status: StatusReporter
    fencing: Fencing
    compute: Executor  # the one thread that runs ONNX Runtime and FAISS
    metrics: WorkerMetrics
    reads: AsyncClient  # the HTTP API's own connections (bounded; never the writer's)
    trending: TrendingCache  # the fallback list's trending part, re-read by a timer
    catalogue: Catalogue  # the live item catalogue (new and withdrawn items)
    items: ItemUpdates  # its listener
    funnel: Funnel  # the deployment's funnel (serving.funnel): stages, rules, widths
    online: OnlineMetrics | None  # clicks against the lists users held (None: off)
    worker_id: str
    started_at_ms: int
    rebalanced: bool = False  # a partition assignment has completed (readiness)
    heap_frozen: bool = False  # see settle_heap
    marks: LogMarks = field(default_factory=LogMarks)  # log generations (streams.log_resets)


async def process_clicks(app: faust.App, stream: faust.StreamT[bytes], ctx: WorkerContext) -> None:
    """The click agent: wait for a model, then turn every micro-batch into fresh lists."""
    s = ctx.settings
    # Faust stalls the stream whenever more than 100 changelog records wait in its
    # producer buffer, then waits for them one by one (a task and a timer each).
    # A batch writes one record per touched user, so let a few batches' worth wait.
    app.producer.buffer.max_messages = max(100, 4 * s.batch_size)
    await ctx.holder.wait_ready()
    await ctx.items.ready.wait()  # the whole catalogue, before the first list
    settle_heap(ctx)
    for p in range(s.topic_partitions):  # every series from 0, so a rate() sees the first reset
        ctx.metrics.log_resets.labels(str(p))
    worker = click_worker(ctx, end_offset=lambda topic, partition: _highwater(app, topic, partition))
    pipeline = Pipeline(worker, stream.ack, s.pipeline_depth)
    try:
        # take_events (faust-streaming) is missing from StreamT, the interface
        async for events in stream.take_events(  # type: ignore[attr-defined]
                s.batch_size, within=s.batch_wait_s):
            await pipeline.submit(events)
    except asyncio.CancelledError:  # shutdown: let the batches in flight finish and ack
        await pipeline.settle(timeout=5.0)
        raise
    await pipeline.drain()


def _highwater(app: faust.App, topic: str, partition: int) -> int | None:
    """The partition's end offset as of the consumer's last fetch (None: none yet)."""
    try:
        end = app.consumer.highwater(TP(topic, partition))
    except Exception:  # noqa: BLE001 - not assigned any more, consumer restarting: unknown
        return None
    return end if isinstance(end, int) and end >= 0 else None


def click_worker(ctx: WorkerContext, end_offset: EndOffsets | None = None) -> ClickWorker:
    s = ctx.settings
    return ClickWorker(BatchContext(
        table=ctx.sessions, dlq=ctx.topics.dead_letters, model=ctx.holder, writer=ctx.writer,
        executor=ctx.compute, fencing=ctx.fencing, status=ctx.status,
        rules=SessionRules.from_settings(s), funnel=ctx.funnel, worker_id=ctx.worker_id,
        metrics=ctx.metrics, trending=ctx.trending, catalogue=ctx.catalogue,
        dead_letter_max_bytes=s.dead_letter_max_bytes, online=ctx.online,
        impressions=ctx.topics.impressions if s.impressions else None, marks=ctx.marks,
        end_offset=end_offset or (lambda topic, partition: None)))


async def process_impressions(stream: faust.StreamT[bytes], ctx: WorkerContext) -> None:
    """The shown-reports agent (``STREAMREC_IMPRESSIONS_SHOWN``): applications' reports of
    what they displayed narrow the held lists; bad records go to the dead-letter topic
    before their offsets are committed."""
    worker = click_worker(ctx)
    async for events in stream.take_events(  # type: ignore[attr-defined]
            ctx.settings.batch_size, within=ctx.settings.batch_wait_s):
        await worker.shown_reports(events)


async def follow_model_updates(app: faust.App, ctx: WorkerContext) -> None:
    """The model-update listener, plus the process-wide compute limits and diagnostics."""
    install_task_dump(asyncio.get_running_loop(), lambda: consumer_state(app.consumer))
    ctx.metrics.watch_consumer(lambda: consumer_lag(app.consumer))
    ctx.metrics.watch_changelog(lambda: ctx.sessions.changelog_applied)
    # One compute budget for ONNX Runtime, FAISS and numpy's BLAS: more threads than
    # the quota fight the event loop (measured: 256x12k GEMM median 16 ms on 2 BLAS
    # threads under load versus 7 ms on one).
    threads = ctx.settings.compute_threads
    faiss.omp_set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")
    loop = type(asyncio.get_running_loop())
    ctx.status.report({"started_at": ctx.started_at_ms, "pid": os.getpid(),
                       "event_loop": f"{loop.__module__}.{loop.__qualname__}"})
    await ensure_topics(ctx.settings, [ctx.settings.model_updates_topic])
    await ctx.updates.run()


def settle_heap(ctx: WorkerContext) -> None:
    """Once the worker first serves, move what start-up made out of the collector's reach.

    Python's full (generation 2) collection walks every tracked object; in a worker
    most of them are start-up's (Faust, aiokafka, the bundle, the recovered table) and
    live for good. Measured with 10,000 sessions: full collections of 65–111 ms on the
    event loop, every few seconds under load; after ``gc.freeze()`` of the start-up
    heap, 7–27 ms. Objects made later (sessions, batches) are collected as before,
    and frozen ones are still freed by reference counting (a swapped-out bundle is);
    only a reference cycle among start-up objects would now outlive its use.
    """
    if ctx.heap_frozen or not (ctx.rebalanced and ctx.holder.loaded):
        return
    gc.collect()
    gc.freeze()
    ctx.heap_frozen = True


def heartbeat(ctx: WorkerContext) -> None:
    """Renew the worker's status hash (it expires ``status_ttl_s`` after the last write) and
    say where its HTTP port is, so ``streamrec status`` can read its metrics."""
    ctx.status.report({"heartbeat_at": int(time.time() * 1000),
                       "web": ctx.settings.web_address})


async def follow_items(ctx: WorkerContext) -> None:
    """The items-topic listener (:mod:`streams.catalogue`)."""
    await ctx.items.run()


async def refresh_trending(ctx: WorkerContext) -> None:
    """Re-read the trending list (the fallback of users with no usable history). Twice the
    list length, since a user's seen items are left out; a Redis outage keeps the last."""
    s = ctx.settings
    try:
        await ctx.trending.refresh(ctx.reads, meta_prefix(s.key_prefix, s.redis_cluster),
                                   int(s.trending_half_life_s * 1000), 2 * s.top_n)
    except Exception as e:  # noqa: BLE001 - best effort: the lists go on with the last read
        log.debug("trending not refreshed: %s: %s", type(e).__name__, e)


def on_partitions_assigned(ctx: WorkerContext) -> None:
    """A new fencing epoch for every assignment (:mod:`streams.fencing`); the log
    generations are read again from the table (another owner may have moved them on)."""
    ctx.fencing.on_assigned()
    ctx.marks.forget()


def on_rebalance_complete(app: faust.App, ctx: WorkerContext) -> None:
    """Report the clicks partitions this worker now owns."""
    assigned = sorted(tp.partition for tp in app.assignor.assigned_actives()
                      if tp.topic == ctx.settings.clicks_topic)
    ctx.rebalanced = True
    settle_heap(ctx)
    ctx.status.report({"rebalanced_at": int(time.time() * 1000),
                       "partitions": ",".join(map(str, assigned)),
                       "table_store": ctx.settings.table_store,
                       "changelog_applied": ctx.sessions.changelog_applied})
