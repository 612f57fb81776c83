"""The Faust app: :func:`create_app` wires the topics, the table and the agents together.

``streamrec worker`` calls ``create_app`` with its settings. For
``faust -A streams.app worker``, the module attribute ``app`` builds one from
the environment on first access (importing this module builds nothing).

Where things live: topics in :mod:`streams.topics`, the session table in
:mod:`streams.tables`, what the agents do in :mod:`streams.agents`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import faust

from serving.catalogue import Catalogue
from serving.funnel import Funnel, FunnelConfig
from serving.keys import epoch_key, meta_prefix
from serving.online import OnlineMetrics
from serving.redis_client import async_client
from serving.redis_store import RecsWriter
from serving.trending import TrendingCache
from streamrec.kafka import faust_credentials
from streamrec.settings import Settings
from streams import agents, web
from streams.batch import DeadLetter
from streams.catalogue import ItemUpdates
from streams.consumer import install_consumer
from streams.fencing import Fencing
from streams.hotswap import ModelHolder, ModelUpdates
from streams.prometheus import WorkerMetrics
from streams.retry import StatusReporter
from streams.table_stores import ChangelogRecovery
from streams.tables import session_table
from streams.topics import worker_topics

READ_CONNECTIONS = 16  # Redis connections of a worker's HTTP read API


def faust_app(settings: Settings) -> faust.App:
    """The bare Faust app with the worker's broker, consumer and rebalance settings."""
    install_consumer(int(settings.fetch_max_wait_s * 1000), settings.group_instance_id,
                     settings.isolation_level)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=f"{settings.table_store}://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_credentials=faust_credentials(settings),
        consumer_auto_offset_reset="earliest",
        # one HTTP port per worker: /health, /ready, /metrics, /recs (streams/web.py)
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        datadir=str(settings.data_dir) if settings.data_dir else None,
        table_cleanup_interval=3600.0,
        # batch changelog records instead of one produce request each (profiled: the
        # socket writes of unbatched changelog sends were ~20% of the worker's time)
        producer_linger=settings.producer_linger_s,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    )
    tables = app.tables
    tables._recovery = ChangelogRecovery(app, tables, beacon=tables.beacon, loop=tables.loop)  # type: ignore[attr-defined]
    return app


def worker_context(app: faust.App, settings: Settings) -> agents.WorkerContext:
    """The agents' shared objects. Builds clients but does no I/O (redis-py connects lazily)."""
    url, cluster = settings.redis_url.get_secret_value(), settings.redis_cluster
    client = async_client(url, cluster)
    writer = RecsWriter(client, settings.key_prefix, settings.recs_ttl_s, settings.status_ttl_s,
                        settings.trending_half_life_s, settings.trending_max_items, cluster)
    worker_id = settings.worker_name
    # Status is best-effort and written in the background: no Redis outage may stop a worker.
    status = StatusReporter(lambda fields: writer.report_status(worker_id, fields))
    holder = ModelHolder()
    metrics = WorkerMetrics()
    # Bundles are validated in their own thread, so serving goes on during a swap.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-loader")
    topics = worker_topics(app, settings)
    catalogue = Catalogue()
    metrics.watch_model(lambda: holder.current.manifest.created_at if holder.loaded else None)
    online = OnlineMetrics(settings.online_metrics_users) if settings.online_metrics else None
    if online is not None:
        metrics.watch_online(online, lambda: (holder.current.version, len(holder.current.vocab.ids))
                             if holder.loaded else ("", 0))

    async def send_dead(letters: Sequence[DeadLetter]) -> None:
        for d in letters:
            await topics.dead_letters.send(key=d.key, value=d.encode(worker_id, settings.dead_letter_max_bytes))

    items = ItemUpdates(settings, holder, catalogue, send_dead, metrics)
    return agents.WorkerContext(
        settings=settings,
        topics=topics,
        sessions=session_table(app, settings.topic_partitions),
        holder=holder,
        updates=ModelUpdates(settings, holder, status, loader, metrics, on_swap=items.on_swap),
        writer=writer,
        status=status,
        fencing=Fencing(lambda: client.incr(epoch_key(meta_prefix(settings.key_prefix, cluster)))),
        compute=ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute"),
        metrics=metrics,
        # on one Redis, requests beyond the pool wait for a connection (up to 2 s), not fail
        # (a cluster client keeps up to 100 per node: serving.redis_client.async_client)
        reads=async_client(url, cluster, max_connections=READ_CONNECTIONS),
        trending=TrendingCache(),
        catalogue=catalogue,
        items=items,
        funnel=Funnel(FunnelConfig.from_settings(settings)),  # a malformed rule stops the start
        online=online,
        worker_id=worker_id,
        started_at_ms=int(time.time() * 1000),
    )


def create_app(settings: Settings) -> faust.App:
    """A worker's Faust app: the context built, the agents registered. Nothing else."""
    app = faust_app(settings)
    ctx = worker_context(app, settings)

    web.register(app, ctx)

    @app.agent(ctx.topics.clicks, name="process_clicks")
    async def process_clicks(stream: faust.StreamT[bytes]) -> None:
        await agents.process_clicks(app, stream, ctx)

    if settings.impressions_shown:
        @app.agent(ctx.topics.impressions, name="process_impressions")
        async def process_impressions(stream: faust.StreamT[bytes]) -> None:
            await agents.process_impressions(stream, ctx)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_model_updates() -> None:
        await agents.follow_model_updates(app, ctx)

    @app.timer(interval=settings.status_ttl_s / 6)  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        agents.heartbeat(ctx)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_items() -> None:
        await agents.follow_items(ctx)

    @app.timer(interval=settings.trending_refresh_s)  # type: ignore[untyped-decorator]
    async def refresh_trending() -> None:
        await agents.refresh_trending(ctx)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def take_epoch(sender: faust.App, assigned: set[object], **kwargs: object) -> None:
        agents.on_partitions_assigned(ctx)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def report_assignment(sender: faust.App, **kwargs: object) -> None:
        agents.on_rebalance_complete(app, ctx)

    return app


def __getattr__(name: str) -> faust.App:
    """``streams.app.app``: the app built from the environment (``faust -A streams.app``)."""
    if name == "app":
        built = create_app(Settings.from_env())
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
