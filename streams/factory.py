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

from serving.keys import epoch_key
from serving.store import RecsWriter
from streamrec.kafka import faust_credentials
from streamrec.settings import Settings
from streams.admin import ensure_topics
from streams.batch import BatchRules
from streams.fencing import Fencing
from streams.consumer import install_consumer
from streams.diagnostics import consumer_state, install_task_dump
from streams.model import ModelHolder
from streams.models import ModelUpdates
from streams.retry import StatusReporter
from streams.tables import SessionTable
from streams.worker import ClickWorker, Pipeline

log = logging.getLogger(__name__)


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A bytes-in, bytes-out topic: decoding is ours, so a bad record can't crash Faust."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=True)


def check_redis(settings: Settings, timeout_s: float = 2.0) -> None:
    """Fail at start on a Redis that refuses us; go on (and wait later) if it is only down.

    A wrong password or an ACL user without the commands the worker needs will not
    fix itself: restarting would only loop. An unreachable Redis may come back, and
    the worker waits for it (``streams.retry``).
    """
    import redis
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

    from streamrec.errors import ConfigError

    url = settings.redis_url.get_secret_value()
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    where = settings.redis_host
    try:
        client.ping()
        client.incrby(epoch_key(settings.key_prefix), 0)  # the fencing epoch: needs INCRBY on the prefix
    except (AuthenticationError, NoPermissionError) as e:
        raise ConfigError(f"Redis at {where} refused the worker ({type(e).__name__}: {e}); "
                          "check STREAMREC_REDIS_URL's user, password and ACL") from None
    except redis.ConnectionError as e:
        log.warning("Redis at %s is not reachable at start (%s); the worker starts and waits "
                    "for it before writing lists", where, e)
    except ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e) or "NOPERM" in str(e):
            raise ConfigError(f"Redis at {where} refused the worker: {e}; check "
                              "STREAMREC_REDIS_URL's user, password and ACL") from None
        raise
    finally:
        client.close()


def create_app(settings: Settings) -> faust.App:
    install_consumer(int(settings.fetch_max_wait_s * 1000), settings.group_instance_id)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_credentials=faust_credentials(settings),
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
    # Each session goes to the changelog partition of the record it came from, whatever
    # the producer's partitioner (streams/tables.py). key_type=bytes -> raw keys; values
    # (plain dicts) use the json codec.
    sessions = app.tables.add(SessionTable(app=app, name="sessions",
                                           partitions=settings.topic_partitions, key_type=bytes))
    holder = ModelHolder()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
    started_at = int(time.time() * 1000)
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    rules = BatchRules(settings.session_max_len, settings.dedup_window, settings.max_event_bytes)
    # redis-py connects lazily, so building the client here does no I/O.
    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    writer = RecsWriter(client, settings.key_prefix, settings.recs_ttl_s)
    # Status is best-effort and written in the background: no Redis outage may stop a worker.
    status = StatusReporter(lambda fields: writer.report_status(worker_id, fields))
    fencing = Fencing(lambda: client.incr(epoch_key(settings.key_prefix)))

    # Bundles are validated in their own thread, so serving goes on during a swap.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-loader")
    updates = ModelUpdates(settings, holder, status, loader)

    @app.task
    async def follow_model_updates() -> None:
        install_task_dump(asyncio.get_running_loop(), lambda: consumer_state(app.consumer))
        # One compute budget for ONNX Runtime, FAISS and numpy's BLAS: more threads than
        # the quota fight the event loop (measured: 256x12k GEMM median 16 ms on 2 BLAS
        # threads under load versus 7 ms on one).
        faiss.omp_set_num_threads(settings.compute_threads)
        threadpool_limits(limits=settings.compute_threads, user_api="blas")
        status.report({"started_at": started_at, "pid": os.getpid()})
        await ensure_topics(settings, [settings.model_updates_topic])
        await updates.run()

    @app.on_partitions_assigned.connect
    async def take_epoch(sender: faust.App, assigned: set[object], **kwargs: object) -> None:
        fencing.on_assigned()  # a new fencing epoch for every assignment (streams/fencing.py)

    @app.on_rebalance_complete.connect
    async def report_assignment(sender: faust.App, **kwargs: object) -> None:
        assigned = sorted(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic == settings.clicks_topic)
        status.report({"rebalanced_at": int(time.time() * 1000),
                       "partitions": ",".join(map(str, assigned))})

    @app.agent(clicks)
    async def process_clicks(stream: faust.StreamT) -> None:
        # Faust stalls the stream whenever more than 100 changelog records wait in its
        # producer buffer, then waits for them one by one (a task and a timer each).
        # A batch writes one record per touched user, so let a few batches' worth wait.
        app.producer.buffer.max_messages = max(100, 4 * settings.batch_size)
        await holder.wait_ready()
        worker = ClickWorker(
            table=sessions, dlq=dlq, model=holder, writer=writer, executor=executor, rules=rules,
            top_n=settings.top_n, worker_id=worker_id, fencing=fencing, status=status,
            dead_letter_max_bytes=settings.dead_letter_max_bytes)
        pipeline = Pipeline(worker, stream.ack, settings.pipeline_depth)
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_wait_s):
                await pipeline.submit(events)
        except asyncio.CancelledError:  # shutdown: let the batches in flight finish and ack
            await pipeline.settle(timeout=5.0)
            raise
        await pipeline.drain()

    return app



