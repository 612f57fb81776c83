"""Builds the Faust app: topics, the session table, the click agent, the model-update listener."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import faust
import redis.asyncio as aioredis
from threadpoolctl import threadpool_limits

from serving.store import RecsWriter
from streamrec.settings import Settings
from streams.admin import ensure_topics
from streams.batch import BatchRules
from streams.fetch import use_fetch_max_wait
from streams.model import ModelHolder
from streams.models import ModelUpdates
from streams.worker import ClickWorker, Pipeline

log = logging.getLogger(__name__)


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A bytes-in, bytes-out topic: decoding is ours, so a bad record can't crash Faust."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=True)


def create_app(settings: Settings) -> faust.App:
    use_fetch_max_wait(int(settings.fetch_max_wait_s * 1000))
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_cleanup_interval=3600.0,
        # batch changelog records instead of one produce request each (profiled: the
        # socket writes of unbatched changelog sends were ~20% of the worker's time)
        producer_linger=settings.producer_linger_s,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    )
    clicks = raw_topic(app, settings.clicks_topic, settings.topic_partitions)
    dlq = raw_topic(app, settings.dlq_topic, settings.topic_partitions)
    # use_partitioner: a batch holds many users, so the changelog partition must come
    # from the key (same murmur2 as the producer's), not from the "current" event.
    # key_type=bytes -> raw keys; values (plain dicts) use the json codec.
    sessions = app.Table("sessions", partitions=settings.topic_partitions, key_type=bytes,
                         use_partitioner=True)
    holder = ModelHolder()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
    started_at = int(time.time() * 1000)
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    rules = BatchRules(settings.session_max_len, settings.dedup_window, settings.max_event_bytes)
    # redis-py connects lazily, so building the client here does no I/O.
    writer = RecsWriter(aioredis.Redis.from_url(settings.redis_url.get_secret_value()),
                        settings.key_prefix, settings.recs_ttl_s)

    # Bundles are validated in their own thread, so serving goes on during a swap.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-loader")
    updates = ModelUpdates(settings, holder, writer, worker_id, loader)

    @app.task
    async def follow_model_updates() -> None:
        # One compute budget for ONNX Runtime, FAISS and numpy's BLAS: more threads than
        # the quota fight the event loop (measured: 256x12k GEMM median 16 ms on 2 BLAS
        # threads under load versus 7 ms on one).
        faiss.omp_set_num_threads(settings.compute_threads)
        threadpool_limits(limits=settings.compute_threads, user_api="blas")
        await writer.report_status(worker_id, {"started_at": started_at, "pid": os.getpid()})
        await ensure_topics(settings, [settings.model_updates_topic])
        await updates.run()

    @app.on_rebalance_complete.connect
    async def report_assignment(sender: faust.App, **kwargs: object) -> None:
        assigned = sorted(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic == settings.clicks_topic)
        await writer.report_status(worker_id, {
            "rebalanced_at": int(time.time() * 1000),
            "partitions": ",".join(map(str, assigned))})

    @app.agent(clicks)
    async def process_clicks(stream: faust.StreamT) -> None:
        # Faust stalls the stream whenever more than 100 changelog records wait in its
        # producer buffer, then waits for them one by one (a task and a timer each).
        # A batch writes one record per touched user, so let a few batches' worth wait.
        app.producer.buffer.max_messages = max(100, 4 * settings.batch_size)
        await holder.wait_ready()
        worker = ClickWorker(
            table=sessions, dlq=dlq, model=holder, writer=writer, executor=executor, rules=rules, top_n=settings.top_n, worker_id=worker_id)
        pipeline = Pipeline(worker, stream.ack, settings.pipeline_depth)
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_wait_s):
                await pipeline.submit(events)
        except asyncio.CancelledError:  # shutdown: let the batches in flight finish and ack
            await pipeline.settle(timeout=5.0)
            raise
        await pipeline.drain()

    return app



