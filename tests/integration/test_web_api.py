"""The worker's HTTP API on a live worker with tokens and POST /events on: only our routes
answer, authentication refuses and admits, requests are counted, POST /events validates as
the worker does, and schemathesis finds the answers conform to /openapi.json."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson
import pytest
import redis
import schemathesis
from aiohttp import web as aioweb
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

from serving.bundle import load_bundle
from serving.keys import recs_key
from streamrec.errors import BrokerUnavailable, EventError
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streams.ingest import EventIngest
from streams.openapi import MAX_N
from streams.web import post_event
from tests.integration.conftest import WorkerProc, consume

pytestmark = pytest.mark.integration

NEW, OLD = "new-token-" + "n" * 16, "old-token-" + "o" * 16
FAUST_PAGES = ("/", "/router/", "/table/", "/table/sessions/", "/table/sessions/u1/", "/graph/",
               "/stats/", "/performance/")


def module_settings(**overrides: object) -> Settings:
    """Settings of their own (topics, key prefix) for this module's worker."""
    run = uuid.uuid4().hex[:10]
    s = Settings(**{  # type: ignore[arg-type]
        "app_id": f"t-{run}", "clicks_topic": f"t-{run}-clicks", "dlq_topic": f"t-{run}-dlq",
        "model_updates_topic": f"t-{run}-models", "items_topic": f"t-{run}-items",
        "impressions_topic": f"t-{run}-impressions", "key_prefix": f"test:{run}:",
        "topic_partitions": 4, "worker_id": f"w-{run}", "rebalance_timeout_s": 3.0,
        "session_timeout_s": 10.0, "producer_max_batch_bytes": 1, **overrides})
    asyncio.run(ensure_topics(s))
    return s


@pytest.fixture(scope="module")
def api(services: None, tmp_path_factory: pytest.TempPathFactory,
        tiny_bundle_dir: Path) -> Iterator[WorkerProc]:
    s = module_settings(web_tokens=f"{NEW},{OLD}", web_events=True, max_event_bytes=1024, web_body_timeout_s=1.0)
    w = WorkerProc.start(s, tmp_path_factory.mktemp("api") / "worker.log", bundle=tiny_bundle_dir)
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


def request(w: WorkerProc, path: str, *, method: str = "GET", token: str | None = None,
            body: bytes | None = None, headers: Mapping[str, str] | None = None,
            ) -> tuple[int, Mapping[str, str], bytes]:
    """One request to the worker, its token only where given: (status, headers, body)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{w.settings.web_port}{path}", data=body,
                                 headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post(w: WorkerProc, body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, object]]:
    status, _, raw = request(w, "/events", method="POST", token=NEW, body=body,
                             headers={"Content-Type": content_type})
    return status, orjson.loads(raw)


def test_only_our_routes_answer(api: WorkerProc) -> None:
    for path in FAUST_PAGES:
        status, headers, body = request(api, path, token=NEW)
        assert status == 404, path
        assert headers["Content-Type"].startswith("application/json")
        assert "/openapi.json lists the routes" in orjson.loads(body)["error"]
    for path in ("/health", "/ready", "/openapi.json", "/metrics", "/recs/u1"):
        assert request(api, path, token=NEW)[0] == 200, path
    status, headers, body = request(api, "/health", method="POST", body=b"{}")
    assert status == 405 and "GET" in headers["Allow"]
    assert "POST is not allowed on /health" in orjson.loads(body)["error"]
    doc = orjson.loads(request(api, "/openapi.json")[2])
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/health", "/ready", "/metrics", "/recs/{user_id}",
                                 "/openapi.json", "/events"}


def test_tokens_refuse_and_admit(api: WorkerProc) -> None:
    for path in ("/recs/u1", "/metrics"):
        status, headers, body = request(api, path)
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="streamrec"', path
        assert "Authorization: Bearer" in orjson.loads(body)["error"]
        status, headers, _ = request(api, path, token=NEW + "x")
        assert status == 401, path
        assert headers["WWW-Authenticate"] == 'Bearer realm="streamrec", error="invalid_token"'
        status, headers, _ = request(api, path, headers={"Authorization": f"Basic {NEW}"})
        assert status == 401 and 'error="invalid_request"' in headers["WWW-Authenticate"]
        for token in (NEW, OLD):  # both while rotating
            assert request(api, path, token=token)[0] == 200, (path, token)
    status, _, _ = request(api, "/events", method="POST", body=b"{}",
                           headers={"Content-Type": "application/json"})
    assert status == 401  # refused before the body is looked at
    for path in ("/health", "/ready", "/openapi.json"):  # probes and the document stay open
        assert request(api, path)[0] == 200, path
    # the harness sends the worker's token: metrics and latency fields keep working
    assert api.metric("streamrec_ready") == 1
    assert isinstance(api.latency_fields(), dict)


def http_counts(w: WorkerProc) -> dict[tuple[str, str, str], float]:
    text = request(w, "/metrics", token=NEW)[2].decode()
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "streamrec_http_requests_total"}


def test_requests_are_counted_by_route_method_and_status(api: WorkerProc) -> None:
    before = http_counts(api)
    for _ in range(3):
        request(api, "/recs/u1")  # 401
    request(api, "/recs/u2", token=NEW)
    request(api, "/router/")
    request(api, "/recs/u1?n=0", token=NEW)
    after = http_counts(api)
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert delta == {("/recs/{user_id}", "GET", "401"): 3, ("/recs/{user_id}", "GET", "200"): 1,
                     ("unmatched", "GET", "404"): 1, ("/recs/{user_id}", "GET", "400"): 1,
                     ("/metrics", "GET", "200"): 1}  # the scrape before this one
    text = request(api, "/metrics", token=NEW)[2].decode()
    counts = {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
              for s in f.samples if s.name == "streamrec_http_request_duration_seconds_count"}
    assert counts[(("method", "GET"), ("route", "/recs/{user_id}"), ("status", "401"))] >= 3


def test_post_events_validates_as_the_worker_and_produces(api: WorkerProc) -> None:
    s = api.settings
    items = list(load_bundle(s.bundle_path).vocab.ids)
    now = int(time.time() * 1000)
    good = {"event_id": "http-1", "user_id": "web-u1", "item_id": items[3], "ts": now}
    status, body = post(api, json.dumps({**good, "extra": "kept"}).encode())
    assert status == 202 and body["event_id"] == "http-1"
    assert body["partition"] in range(s.topic_partitions)

    bad = [
        (b"{not json", 400, "malformed_json"),
        (b'{"event_id": "x\xff", "user_id": "u", "item_id": "i", "ts": 1}', 400, "invalid_utf8"),
        (json.dumps({**good, "ts": "17"}).encode(), 422, "invalid_event"),
        (json.dumps({k: v for k, v in good.items() if k != "item_id"}).encode(), 422, "invalid_event"),
        (json.dumps({**good, "user_id": ""}).encode(), 422, "invalid_event"),
        (json.dumps({**good, "pad": "x" * 2000}).encode(), 413, "too_large"),
        (b"", 400, "malformed_json"),
    ]
    for raw, code, kind in bad:
        status, body = post(api, raw)
        assert (status, body["kind"]) == (code, kind), raw[:40]
        assert body["error"]
    status, body = post(api, json.dumps(good).encode(), content_type="text/plain")
    assert (status, body["kind"]) == (415, "unsupported_media_type")
    good2 = {**good, "event_id": "http-2", "item_id": items[4], "ts": now + 1}
    assert post(api, json.dumps(good2).encode())[0] == 202

    records = consume(s.kafka_bootstrap, s.clicks_topic, 2, timeout=20)
    assert [k for k, _ in records] == [b"web-u1", b"web-u1"]  # keyed by user, bad ones absent
    assert orjson.loads(records[0][1])["extra"] == "kept"  # the body as it was sent
    api.wait_events(2)
    status, _, raw = request(api, "/recs/web-u1", token=NEW)
    rec = orjson.loads(raw)
    assert status == 200 and rec["last_event_id"] == "http-2" and rec["seq"] == 2


def test_recs_answers_for_every_user_id_the_events_take(api: WorkerProc) -> None:
    """Braces (Redis Cluster hash tags, templated ids) and other characters but '/' reach
    the stored list, where aiohttp's default segment pattern answered 404."""
    items = list(load_bundle(api.settings.bundle_path).vocab.ids)
    before = int(api.status().get("events", 0))
    users = ["{tenant-7}:u1", "a{", "b}", "{}", "x y", "ü"]
    for k, user in enumerate(users):
        event = {"event_id": f"brace-{k}", "user_id": user, "item_id": items[k], "ts": 1_700_000_000_000}
        assert post(api, json.dumps(event).encode())[0] == 202, user
    api.wait_events(before + len(users))
    for k, user in enumerate(users):
        status, _, raw = request(api, "/recs/" + urllib.parse.quote(user, safe=""), token=NEW)
        rec = orjson.loads(raw)
        assert status == 200 and rec["user_id"] == user, (user, rec)
        assert rec["fallback"] is False and rec["last_event_id"] == f"brace-{k}"


def test_n_is_one_plain_integer(api: WorkerProc) -> None:
    for query in ("n=%2B5", "n=5_0", "n=%EF%BC%93", "n=%D9%A1%D9%A2", "n=%205", "n=6&n=abc",
                  "n=6&n=6", "n=", "n=abc", "n=0", f"n={MAX_N + 1}", "n=" + "1" * 4301,
                  "n=" + "0" * 4300 + "5"):  # past 4,300 digits int() raises: no 500
        status, headers, raw = request(api, f"/recs/u1?{query}", token=NEW)
        assert status == 400 and headers["Content-Type"].startswith("application/json"), query
        assert "n " in orjson.loads(raw)["error"], query
    status, _, raw = request(api, "/recs/u1?n=3", token=NEW)
    assert status == 200 and len(orjson.loads(raw)["items"]) == 3


def test_a_body_its_encoding_cannot_decode_is_a_400_and_an_unknown_encoding_a_415(
        api: WorkerProc) -> None:
    event = json.dumps({"event_id": "enc-1", "user_id": "enc-u", "item_id": "i", "ts": 1}).encode()
    for coding in ("gzip", "deflate"):
        status, _, raw = request(api, "/events", method="POST", token=NEW, body=b"not " + coding.encode(),
                                 headers={"Content-Type": "application/json", "Content-Encoding": coding})
        body = orjson.loads(raw)
        assert (status, body["kind"]) == (400, "undecodable_body"), (coding, body)
        assert coding in body["error"]
    status, _, raw = request(api, "/events", method="POST", token=NEW, body=event,
                             headers={"Content-Type": "application/json", "Content-Encoding": "x-unknown"})
    assert (status, orjson.loads(raw)["kind"]) == (415, "unsupported_encoding")
    status, _, raw = request(api, "/events", method="POST", token=NEW, body=gzip.compress(event),
                             headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 202 and orjson.loads(raw)["event_id"] == "enc-1"


def test_an_unreadable_stored_list_is_a_json_500(api: WorkerProc) -> None:
    """Any exception a route raises is answered in JSON (a 500), not aiohttp's text page."""
    s = api.settings
    r = redis.Redis.from_url(s.redis_url.get_secret_value())
    key = recs_key(s.key_prefix, "corrupt-u")
    r.hset(key, mapping={"items": "notjson", "seq": "1"})
    try:
        status, headers, raw = request(api, "/recs/corrupt-u", token=NEW)
    finally:
        r.delete(key)
    assert status == 500 and headers["Content-Type"].startswith("application/json")
    assert "internal error" in orjson.loads(raw)["error"]
    assert request(api, "/health")[0] == 200


def test_a_request_that_cannot_be_parsed_leaves_one_log_line_without_the_token(api: WorkerProc) -> None:
    secret = "leaky-" + "t" * 9000  # a header line over aiohttp's 8190 bytes
    with socket.create_connection(("127.0.0.1", api.settings.web_port), timeout=10) as conn:
        conn.sendall(f"GET /recs/u1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\r\n".encode())
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    deadline = time.monotonic() + 10
    while "refused a malformed HTTP request" not in api.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = api.log.read_text()
    assert "refused a malformed HTTP request: LineTooLong" in log
    assert "leaky-" not in log and "Error handling request" not in log


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes(api: WorkerProc) -> None:
    with socket.create_connection(("127.0.0.1", api.settings.web_port), timeout=10) as conn:
        conn.sendall(f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {NEW}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event_id\"".encode())
        started = time.monotonic()
        answer = b""
        while chunk := conn.recv(65536):  # until the server closes the connection
            answer += chunk
        waited = time.monotonic() - started
    assert b" 408 " in answer.split(b"\r\n")[0], answer[:200]
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["kind"] == "body_timeout"
    assert 0.9 <= waited < 5, waited
    assert request(api, "/health")[0] == 200


def test_events_allows_post_only_and_says_so(api: WorkerProc) -> None:
    for method in ("GET", "HEAD", "PUT"):
        status, headers, _ = request(api, "/events", method=method, token=NEW)
        assert status == 405 and headers["Allow"] == "POST", (method, dict(headers))


def test_status_reads_metrics_with_the_token(api: WorkerProc) -> None:
    """``streamrec status`` sends the first token: the worker's latency, not "unreachable"."""
    api.wait_for(lambda st: "web" in st, 30, "a heartbeat")
    out = subprocess.run([sys.executable, "-m", "cli", "status", "--json"],
                         env={**api.settings.to_env(), "PATH": "/usr/bin:/bin"},
                         capture_output=True, check=True, text=True)
    latency = orjson.loads(out.stdout)["workers"][api.name]["latency_ms"]
    assert "unreachable" not in latency and latency["count"] >= 2, latency


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_post_events_answers_503_when_the_broker_is_down() -> None:
    """The endpoint with its producer pointed at a port where no broker listens: a 503,
    promptly, and a 202 from a second ingest on the real broker shows the path is sound."""
    async def run() -> tuple[int, dict[str, object], float]:
        ingest = EventIngest(f"127.0.0.1:{closed_port()}", "clicks-nowhere", 1024, timeout_s=2.0)
        app = aioweb.Application()

        async def handler(r: aioweb.Request) -> aioweb.Response:
            return await post_event(ingest, r)

        app.router.add_post("/events", handler)
        runner = aioweb.AppRunner(app)
        await runner.setup()
        port = closed_port()
        await aioweb.TCPSite(runner, "127.0.0.1", port).start()
        started = time.monotonic()
        try:
            body = json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                await asyncio.to_thread(urllib.request.urlopen, req, timeout=30)
                raise AssertionError("accepted with no broker")
            except urllib.error.HTTPError as e:
                return e.code, orjson.loads(e.read()), time.monotonic() - started
        finally:
            await ingest.close()
            await runner.cleanup()

    status, body, seconds = asyncio.run(run())
    assert status == 503 and "cannot connect to Kafka" in str(body["error"])
    assert seconds < 30  # bounded by the ingest's timeout, not left hanging


def test_a_silent_broker_gives_every_waiting_request_its_503_within_the_timeout() -> None:
    """A broker that takes the connection and never answers: requests arriving together
    share one connection attempt, so each gets its 503 within the timeout, where each
    used to wait for every attempt before its own (the n-th after n timeouts)."""
    async def run() -> tuple[list[BaseException | object], float]:
        held: list[asyncio.StreamWriter] = []

        async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # read nothing, answer nothing

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ingest = EventIngest(f"127.0.0.1:{port}", "clicks-silent", 1024, timeout_s=1.0)
        body = json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1}).encode()
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(ingest.submit(body) for _ in range(6)),
                                           return_exceptions=True)
            return results, time.monotonic() - started
        finally:
            await ingest.close()
            for w in held:
                w.close()
            server.close()

    results, seconds = asyncio.run(run())
    assert all(isinstance(r, BrokerUnavailable) for r in results), results
    assert seconds < 3.0, seconds  # one timeout (1 s) and slack; one after another took 6 s


def test_an_event_the_producer_cannot_carry_is_a_413_not_a_retry(api: WorkerProc) -> None:
    """Under STREAMREC_MAX_EVENT_BYTES but over the producer's request size once the record's
    overhead is added: too large (413), where it was a 503 that asks for a retry."""
    async def run() -> BaseException | None:
        ingest = EventIngest(api.settings.kafka_bootstrap, api.settings.clicks_topic, 1_048_576)
        head = {"event_id": "big", "user_id": "big-u", "item_id": "i", "ts": 1, "pad": ""}
        pad = 1_048_570 - len(json.dumps(head))
        body = json.dumps({**head, "pad": "x" * pad}).encode()
        assert len(body) <= 1_048_576
        try:
            await ingest.submit(body)
        except (EventError, BrokerUnavailable) as e:
            return e
        finally:
            await ingest.close()
        return None

    error = asyncio.run(run())
    assert isinstance(error, EventError) and error.kind == "too_large", error


EXAMPLES = 25  # per operation and mode: enough to find a 500 or a stray answer, and quick


def test_every_answer_conforms_to_the_document(api: WorkerProc) -> None:
    """schemathesis, every operation of /openapi.json with data that fits it and data that
    does not: no 500, every status, content type, header and body as documented, and the
    protected routes refuse a request without the token (its ignored_auth check)."""
    # A body over STREAMREC_MAX_EVENT_BYTES is refused by its size first, valid or not: a
    # byte limit is not expressible in JSON Schema, so 413 (documented) is an expected
    # answer to schema-valid data too, and a rejection of invalid data.
    config = SchemathesisConfig.from_dict({"checks": {
        "negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 415, 422]},
        "positive_data_acceptance": {"expected-statuses": [
            "2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]}}})
    schema = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{api.settings.web_port}/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    # every route but the document itself (schemathesis leaves out the schema's own URL)
    assert {op.label for op in operations} == {"GET /health", "GET /ready", "GET /metrics",
                                               "GET /recs/{user_id}", "POST /events"}
    doc = orjson.loads(request(api, "/openapi.json")[2])
    for op in operations:
        spec = doc["paths"][op.path][op.method.lower()]
        takes_input = "parameters" in spec or "requestBody" in spec  # else nothing to get wrong
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[:2 if takes_input else 1]:
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                body = case.body
                if isinstance(body, dict) and isinstance(body.get("ts"), float) \
                        and case.meta is not None \
                        and case.meta.generation.mode is GenerationMode.POSITIVE:
                    # JSON Schema's integer admits 1053.0; the worker's types are strict and
                    # refuse it (422, documented): the document cannot say so, so write 1053
                    body["ts"] = int(body["ts"])
                for name, value in (case.query or {}).items():
                    if value == []:  # requests sends no such parameter: send it, empty
                        case.query[name] = [""]  # type: ignore[index]
                case.call_and_validate(headers={"Authorization": f"Bearer {NEW}"}, timeout=10)

            check()
