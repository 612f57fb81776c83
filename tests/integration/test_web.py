"""The worker's HTTP port: /health, /ready, /metrics and /recs against a real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.bundle import load_bundle
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_health_ready_metrics_and_recs(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings()
    bundle = load_bundle(tiny_bundle_dir)
    items = list(bundle.vocab.ids)
    w = start_worker(s, tiny_bundle_dir)
    records = [(f"u{u}".encode(), encode_event(ClickEvent(f"e{u}-{i}", f"u{u}", items[u * 5 + i],
                                                          int(time.time() * 1000))))
               for i in range(4) for u in range(3)]
    records.append((b"u0", b"{not json"))
    records.append(records[0])  # a duplicate
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    w.wait_events(len(records))

    status, body = w.get("/health")
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    for path in ("/router/", "/table/", "/table/sessions/"):  # Faust's own pages: not served
        assert w.get(path)[0] == 404, path
    assert orjson.loads(w.get("/openapi.json")[1])["openapi"] == "3.1.0"
    status, body = w.get("/ready")
    assert status == 200, body
    assert orjson.loads(body) == {"ready": True, "waiting_for": [], "worker_id": s.worker_id,
                                  "model_version": bundle.version}

    status, body = w.get("/metrics")
    assert status == 200
    m = samples(body.decode())
    assert m[("streamrec_events_total", ())] == 14
    assert m[("streamrec_events_applied_total", ())] == 12
    assert m[("streamrec_events_duplicate_total", ())] == 1
    assert m[("streamrec_dead_lettered_total", (("reason", "malformed_json"),))] == 1
    assert m[("streamrec_lists_written_total", ())] >= 3
    assert m[("streamrec_event_to_redis_seconds_count", ())] == 12
    assert m[("streamrec_model_swaps_total", ())] == 1
    assert m[("streamrec_ready", ())] == 1
    info = [k for k in m if k[0] == "streamrec_model_info"]
    assert info and ("version", bundle.version) in info[0][1]
    lag = {dict(k[1])["partition"]: v for k, v in m.items()
           if k[0] == "streamrec_consumer_lag_records" and dict(k[1])["topic"] == s.clicks_topic}
    assert set(lag) == {str(p) for p in range(s.topic_partitions)} and set(lag.values()) == {0}

    status, body = w.get("/recs/u1?n=2")
    rec = orjson.loads(body)
    assert status == 200 and rec["fallback"] is False and rec["source"] == "model"
    assert len(rec["items"]) == 2 and rec["last_event_id"] == "e1-3" and rec["seq"] == 4
    assert not set(rec["items"]) & set(items[5:9])  # nothing the user clicked

    # a user with no list: what is trending (the 12 items clicked just now), from the
    # worker's last read of the trending set (once a second)
    clicked = {items[u * 5 + i] for i in range(4) for u in range(3)}
    deadline = time.monotonic() + 10
    while True:
        status, body = w.get("/recs/never-seen?n=4")
        rec = orjson.loads(body)
        if rec["source"] == "trending" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and rec["fallback"] is True and rec["source"] == "trending"
    assert len(rec["items"]) == 4 and set(rec["items"]) <= clicked and rec["scores"] is None
    status, body = w.get("/recs/never-seen?n=20")  # more than trending holds: popularity tops up
    rec = orjson.loads(body)
    assert set(rec["items"][:12]) == clicked and len(rec["items"]) == 20
    assert rec["items"][12:] == [x for x in bundle.vocab.decode(list(bundle.popular))
                                 if x not in clicked][:8]

    for bad in ("/recs/u1?n=abc", "/recs/u1?n=0", "/recs/u1?n=100000"):
        assert w.get(bad)[0] == 400, bad


def test_json_logs_are_one_object_per_line(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings(log_format="json")
    w = start_worker(s, tiny_bundle_dir)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [(b"u1", b"{bad")]))
    w.wait_events(1)
    w.stop()
    lines = [line for line in w.log.read_text().splitlines() if line.strip()]
    parsed = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert all(p["worker_id"] == s.worker_id for p in parsed)
    dead = [p for p in parsed if p["msg"].startswith("dead-lettered")]
    assert dead and dead[0]["reason"] == "malformed_json" and dead[0]["offset"] == 0
    swaps = [p for p in parsed if p["msg"].startswith("serving model")]
    assert swaps and swaps[0]["model_version"] == load_bundle(tiny_bundle_dir).version


def test_not_ready_without_a_bundle(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings()
    w = WorkerProc.start(s, tmp_path / "w.log", bundle=Path("/nonexistent/bundle"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = w.get("/ready", timeout=1)
                break
            except OSError:  # the web server is not listening yet
                assert w.alive and time.monotonic() < deadline, w.tail()
                time.sleep(0.2)
        assert status == 503
        assert "no model bundle loaded" in orjson.loads(body)["waiting_for"]
        assert w.get("/recs/u1")[0] == 503
        assert w.get("/health")[0] == 200  # alive, only not ready
    finally:
        w.stop()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_worker_runs_on_the_event_loop_it_is_asked_for(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path, loop: str,
) -> None:
    w = start_worker(make_settings(event_loop=loop), tiny_bundle_dir)
    assert w.wait_for(lambda st: "event_loop" in st, 30, "status")["event_loop"].startswith(loop)
