"""The worker's HTTP port (``STREAMREC_WEB_PORT``, Faust's web server).

========================  =========================================================
``GET /health``           liveness: 200 while the event loop answers
``GET /ready``            readiness: 200 when a bundle is loaded, partitions were
                          assigned, table recovery is done and the items topic was read
                          to its end; else 503 with the reasons
``GET /metrics``          Prometheus exposition of :mod:`streams.prometheus`
``GET /recs/{user_id}``   the user's stored list with its provenance (``?n=`` items at
                          most); a user with no list gets the fallback list (trending,
                          topped up from the bundle's popularity list), marked
                          ``"fallback": true`` and ``source`` (never a 404)
========================  =========================================================

Every response is JSON except ``/metrics``.
"""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from serving.keys import recs_key
from serving.list_types import SOURCE_POPULAR, SOURCE_TRENDING
from serving.reader import parse
from serving.rerank import REASON_POPULAR, REASON_TRENDING
from serving.trending import fallback_list
from streams.agents import WorkerContext

MAX_N = 1000
METRICS_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


def readiness(app: faust.App, ctx: WorkerContext) -> list[str]:
    """What keeps the worker from serving; empty when it is ready."""
    waiting = []
    if not ctx.holder.loaded:
        waiting.append("no model bundle loaded")
    if not ctx.rebalanced:
        waiting.append("no partition assignment yet")
    if app.in_recovery or app.rebalancing:
        waiting.append("rebalancing or recovering tables")
    if not ctx.items.ready.is_set():
        waiting.append("reading the items topic (the live catalogue)")
    return waiting


async def recs_payload(ctx: WorkerContext, user_id: str, n: int) -> dict[str, Any]:
    """The stored list of ``user_id`` (at most ``n`` items), or the fallback list: the
    trending items (the worker's last read), topped up from the bundle's popularity list."""
    raw = await ctx.reads.hgetall(recs_key(ctx.settings.key_prefix, user_id))
    if raw:
        rec = parse(user_id, raw).to_dict()
        rec["items"], rec["scores"] = rec["items"][:n], rec["scores"][:n]  # type: ignore[index]
        if rec["reasons"] is not None:
            rec["reasons"] = rec["reasons"][:n]  # type: ignore[index]
        return {**rec, "fallback": False}
    bundle = ctx.holder.current
    ids = bundle.vocab.ids
    banned = set(ctx.catalogue.live.blocked_ids | ctx.funnel.config.rules.blocklist)
    items, from_trending = fallback_list(ctx.trending.items, (ids[i - 1] for i in bundle.popular),
                                         banned, n)
    return {"user_id": user_id, "items": items, "scores": None,
            "source": SOURCE_TRENDING if from_trending else SOURCE_POPULAR,
            "reasons": [REASON_TRENDING] * from_trending + [REASON_POPULAR] * (len(items) - from_trending),
            "model_version": bundle.version, "list_id": None, "fallback": True}


def register(app: faust.App, ctx: WorkerContext) -> None:
    """Add the worker's pages to ``app``'s web server."""
    ctx.metrics.ready.set_function(lambda: 0.0 if readiness(app, ctx) else 1.0)

    @app.page("/health")
    async def health(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return self.json({"status": "ok", "worker_id": ctx.worker_id})

    @app.page("/ready")
    async def ready(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        waiting = readiness(app, ctx)
        body = {"ready": not waiting, "waiting_for": waiting, "worker_id": ctx.worker_id,
                "model_version": ctx.holder.current.version if ctx.holder.loaded else None}
        return self.json(body, status=503 if waiting else 200)

    @app.page("/metrics")
    async def metrics(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # aiohttp takes the charset apart from the content type
        return self.bytes(generate_latest(ctx.metrics.registry), content_type=METRICS_TYPE)

    @app.page("/recs/{user_id}")
    async def recs(self: faust.web.View, request: faust.web.Request,
                   user_id: str) -> faust.web.Response:
        try:
            n = int(request.query.get("n", ctx.settings.top_n))
        except ValueError:
            return self.json({"error": "n must be an integer"}, status=400)
        if not 1 <= n <= MAX_N:
            return self.json({"error": f"n must be between 1 and {MAX_N}"}, status=400)
        if not ctx.holder.loaded:
            return self.json({"error": "no model bundle loaded yet"}, status=503)
        try:
            return self.json(await recs_payload(ctx, user_id, n))
        except RedisError as e:
            return self.json({"error": f"Redis unavailable: {type(e).__name__}"}, status=503)
