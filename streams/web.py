"""The worker's HTTP port (``STREAMREC_WEB_PORT`` on ``STREAMREC_WEB_BIND``, Faust's web
server), serving these routes and no others (none of Faust's own pages):

==========================  =========================================================
``GET /health``             liveness: 200 while the event loop answers
``GET /ready``              readiness: 200 when a bundle is loaded, partitions were
                            assigned, table recovery is done and the items topic was read
                            to its end; else 503 with the reasons
``GET /metrics``            Prometheus exposition of :mod:`streams.prometheus`
``GET /recs/{user_id}``     the user's stored list with its provenance (``?n=`` items at
                            most); a user with no list gets the fallback list (trending,
                            topped up from the bundle's popularity list), marked
                            ``"fallback": true`` and ``source`` (never a 404)
``GET /openapi.json``       the OpenAPI document of these routes (:mod:`streams.openapi`)
``POST /events``            with ``STREAMREC_WEB_EVENTS=true``: one click event, validated
                            as the worker validates records and produced to the clicks
                            topic (:mod:`streams.ingest`); 202 with the event id
==========================  =========================================================

With ``STREAMREC_WEB_TOKENS`` set, ``/recs``, ``/metrics`` and ``POST /events`` need
``Authorization: Bearer <token>`` with one of its tokens (compared in constant time);
anything else gets a 401 with ``WWW-Authenticate``. Every request is counted and timed
by route, method and status (:mod:`streams.http_metrics`). Every response is JSON
except ``/metrics``, 404s, 405s and 500s included; only requests aiohttp's parser refuses
before any route (its plain-text 400) are not (:class:`BadRequestLog`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import faust
import orjson
from aiohttp import web as aioweb
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestPayloadError
from faust.web.base import BlueprintManager
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from serving.keys import recs_key
from serving.list_types import SOURCE_POPULAR, SOURCE_TRENDING
from serving.reader import parse
from serving.rerank import REASON_POPULAR, REASON_TRENDING
from serving.trending import fallback_list
from streamrec.errors import BrokerUnavailable, EventError
from streamrec.logs import RateLimitedLog
from streams import openapi
from streams.agents import WorkerContext
from streams.http_metrics import HttpMetrics
from streams.ingest import EventIngest
from streams.openapi import MAX_N, PROTECTED

log = logging.getLogger(__name__)

METRICS_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
REALM = 'Bearer realm="streamrec"'
# POST /events: the HTTP status of each kind of bad event (streamrec.errors.EventError.kind)
EVENT_STATUS = {"too_large": 413, "invalid_event": 422}  # any other kind: 400
# the Content-Encodings of a POST body that aiohttp decompresses here
BODY_CODINGS = ("identity", "gzip", "deflate")


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


class BadRequestLog(logging.Filter):
    """On aiohttp's server logger: a request aiohttp cannot parse (an over-long header, an
    unknown method, conflicting lengths) is logged there at ERROR with a traceback whose
    message can quote the request's headers, a bearer token included, and anyone can send
    them. Such a record becomes one rate-limited warning naming the error's type only."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.lines = RateLimitedLog(interval_s, "refused a malformed HTTP request:",
                                    logging.getLogger("streamrec.web"))

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self.lines.add(f"{type(exc).__name__} (HTTP {exc.code})")
            return False
        return True


def redis_refusal(e: RedisError) -> tuple[str, dict[str, str] | None]:
    """The 503's message and headers for a Redis error on ``/recs``: every read connection
    busy (the pool's wait ran out, or a cluster node's limit) is not Redis being down, and
    the client is told when to retry."""
    busy = isinstance(e, MaxConnectionsError) or (
        isinstance(e, RedisConnectionError) and isinstance(e.__cause__, TimeoutError)
        and str(e).startswith("No connection available"))
    if busy:
        return "every Redis read connection is busy: retry shortly", {"Retry-After": "1"}
    return f"Redis unavailable: {type(e).__name__}", None


def bearer_refusal(header: str | None, tokens: Sequence[bytes]) -> tuple[str, str] | None:
    """None when the ``Authorization`` header carries one of ``tokens``; else the error
    message and the ``WWW-Authenticate`` challenge of the 401 (RFC 6750). Every token is
    compared, each in constant time: the answer's timing tells nothing of which matched."""
    if not header:
        return "this route needs Authorization: Bearer <token>", REALM
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return ("the Authorization header must be 'Bearer <token>'",
                f'{REALM}, error="invalid_request"')
    presented = given.strip().encode("utf-8", "surrogateescape")
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token)
    return None if matched else ("the token is not valid", f'{REALM}, error="invalid_token"')


def guard(tokens: Sequence[bytes], metrics: HttpMetrics) -> Middleware:
    """The aiohttp middleware of every request: the bearer check on :data:`PROTECTED`
    routes (where ``tokens`` is not empty), JSON for aiohttp's own errors (404, 405, 413)
    and for any other exception (a 500, its traceback logged), and the request's count and
    time by route, method and status."""
    @aioweb.middleware
    async def middleware(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        status = 500  # what an exception below becomes
        try:
            refusal = bearer_refusal(request.headers.get("Authorization"), tokens) \
                if tokens and route in PROTECTED else None
            if refusal is not None:
                status = 401
                return aioweb.json_response({"error": refusal[0]}, status=401,
                                            headers={"WWW-Authenticate": refusal[1]})
            try:
                response = await handler(request)
            except aioweb.HTTPException as e:
                response = _json_error(request, e)
            except Exception as e:
                log.exception("%s %s failed", request.method, request.path)
                response = aioweb.json_response(
                    {"error": f"internal error ({type(e).__name__}); the worker's log has the "
                              "traceback"}, status=500)
            status = response.status
            return response
        finally:
            metrics.observe(route, request.method, status, time.perf_counter() - started)

    return middleware


def _json_error(request: aioweb.Request, e: aioweb.HTTPException) -> aioweb.Response:
    if e.status == 404:
        message = f"no route {request.path}; GET /openapi.json lists the routes served here"
    elif e.status == 405:
        message = f"{request.method} is not allowed on {request.path}; allowed: " + \
            e.headers.get("Allow", "")
    else:
        message = e.reason
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    return aioweb.json_response({"error": message}, status=e.status, headers=headers)


async def post_event(ingest: EventIngest, request: aioweb.Request) -> aioweb.Response:
    """``POST /events``: 202 with where the event was written; 400, 413, 415 or 422 with the
    worker's reason and kind for a bad event; 503 when the broker does not take it."""
    if request.content_type != "application/json":
        return _event_error(EventError(f"the body must be application/json, not "
                                       f"{request.content_type}", "unsupported_media_type"), 415)
    if request.query:
        return _event_error(EventError(f"unknown query parameter {next(iter(request.query))!r}: "
                                       "/events takes none", "unknown_parameter"))
    coding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if coding not in BODY_CODINGS:
        return _event_error(EventError(f"Content-Encoding {coding!r} is not supported: send "
                                       f"{', '.join(BODY_CODINGS)}", "unsupported_encoding"), 415)
    limit = ingest.max_event_bytes
    size = request.content_length
    if size is not None and size > limit:  # refused before it is read
        return _event_error(EventError(f"event is {size} bytes, limit is {limit}", "too_large"))
    try:
        async with asyncio.timeout(ingest.body_timeout_s):
            body = await request.read()  # a chunked body: aiohttp stops it at client_max_size
    except TimeoutError:
        late = _event_error(EventError(f"the body did not arrive whole within {ingest.body_timeout_s:g} s",
                                       "body_timeout"), 408)
        late.force_close()  # the rest of the body is not waited for: the connection closes
        await late.prepare(request)
        await late.write_eof()  # sent now; then closed now, not after aiohttp's lingering read
        if request.protocol is not None:
            request.protocol.force_close()
        return late
    except aioweb.HTTPRequestEntityTooLarge:
        return _event_error(EventError(f"event is larger than {limit} bytes", "too_large"))
    except (HttpProcessingError, RequestPayloadError) as e:  # a body its coding cannot decode
        return _event_error(EventError(f"the body cannot be read as {coding}: "
                                       f"{type(e).__name__}", "undecodable_body"))
    try:
        accepted = await ingest.submit(body)
    except EventError as e:
        return _event_error(e)
    except BrokerUnavailable as e:
        return aioweb.json_response({"error": str(e)}, status=503)
    return aioweb.json_response({"event_id": accepted.event_id, "partition": accepted.partition,
                                 "offset": accepted.offset}, status=202)


def _event_error(e: EventError, status: int | None = None) -> aioweb.Response:
    return aioweb.json_response({"error": e.reason, "kind": e.kind},
                                status=status or EVENT_STATUS.get(e.kind, 400))


def register(app: faust.App, ctx: WorkerContext) -> None:
    """Serve the worker's routes, and only those, on ``app``'s web server."""
    s = ctx.settings
    web = cast(AiohttpWeb, app.web)
    # Faust mounts /router, /table, /graph, /stats and an index page of its own: none of
    # them is ours (they expose the host, partition assignment and table contents).
    web.blueprints = BlueprintManager()
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestLog) for f in server_log.filters):
        server_log.addFilter(BadRequestLog())
    web.web_app.middlewares.append(guard([t.encode() for t in s.web_token_values],
                                         HttpMetrics(ctx.metrics.registry)))
    ctx.metrics.ready.set_function(lambda: 0.0 if readiness(app, ctx) else 1.0)
    document = orjson.dumps(openapi.document(s))

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

    # any character but '/': aiohttp's default segment pattern leaves out '{' and '}'
    @app.page("/recs/{user_id:[^/]+}")
    async def recs(self: faust.web.View, request: faust.web.Request,
                   user_id: str) -> faust.web.Response:
        unknown = request.query.keys() - {"n"}
        if unknown:
            return self.json({"error": f"unknown query parameter {min(unknown)!r}: "
                              "/recs takes n only"}, status=400)
        given = cast(aioweb.Request, request).query.getall("n", [])
        if len(given) > 1:
            return self.json({"error": "n is given more than once"}, status=400)
        if given and not (given[0].isascii() and given[0].isdigit()):  # int() takes "+5", "5_0", "５"
            return self.json({"error": "n must be an integer, written in ASCII digits"}, status=400)
        n = s.top_n
        if given:  # past 4,300 digits int() raises: a long n is out of range unread
            n = int(given[0]) if len(given[0]) <= 9 else MAX_N + 1
        if not 1 <= n <= MAX_N:
            return self.json({"error": f"n must be between 1 and {MAX_N}"}, status=400)
        if not ctx.holder.loaded:
            return self.json({"error": "no model bundle loaded yet"}, status=503)
        try:
            return self.json(await recs_payload(ctx, user_id, n))
        except RedisError as e:
            message, headers = redis_refusal(e)
            return self.json({"error": message}, status=503, headers=headers)

    @app.page("/openapi.json")
    async def openapi_json(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return self.bytes(document, content_type="application/json")

    if s.web_events:
        ingest = EventIngest(s, s.clicks_topic, s.max_event_bytes, body_timeout_s=s.web_body_timeout_s)

        async def close_ingest(_: aioweb.Application) -> None:
            await ingest.close()

        web.web_app.on_cleanup.append(close_ingest)

        @app.page("/events")
        class Events(faust.web.View):
            def get_methods(self) -> set[str]:
                return {"POST"}  # Faust adds HEAD to every view: here it would call a GET there is not

            async def post(self, request: faust.web.Request) -> Any:
                return await post_event(ingest, cast(aioweb.Request, request))
