"""``streamrec status``: live workers with their latency percentiles; dead ones leave on their own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from serving.bundle import load_bundle
from serving.keys import workers_set
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration


def status_json(s: Settings) -> dict[str, dict[str, dict[str, object]]]:
    out = subprocess.run([sys.executable, "-m", "cli", "status", "--json"],
                         env={**s.to_env(), "PATH": "/usr/bin:/bin"}, capture_output=True,
                         check=True, text=True)
    return orjson.loads(out.stdout)


def test_status_reports_percentiles_and_forgets_a_dead_worker(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings(status_ttl_s=6)  # a heartbeat a second, the hash expires 6 s after
    w = start_worker(s, tiny_bundle_dir)
    item = load_bundle(tiny_bundle_dir).vocab.ids[0]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic,
                         [(f"u{i}".encode(), encode_event(ClickEvent(f"e{i}", f"u{i}", item,
                                                                      int(time.time() * 1000))))
                          for i in range(20)]))
    w.wait_events(20)
    w.wait_for(lambda st: "web" in st, 10, "a heartbeat")
    report = status_json(s)["workers"]
    assert list(report) == [s.worker_id]
    latency = report[s.worker_id]["latency_ms"]
    assert isinstance(latency, dict) and latency["count"] == 20 and latency["p99"] > 0
    assert report[s.worker_id]["events"] == "20"
    table = subprocess.run([sys.executable, "-m", "cli", "status"],
                           env={**s.to_env(), "PATH": "/usr/bin:/bin"}, capture_output=True,
                           check=True, text=True).stdout.splitlines()
    assert table[0].split()[:3] == ["WORKER", "MODEL", "PARTITIONS"]
    (row,) = [line.split() for line in table[1:]]
    assert row[0] == s.worker_id and row[3] == "20" and float(row[6]) == latency["p99"]

    w.kill()  # no clean shutdown: nothing removes its entry but the expiry
    time.sleep(s.status_ttl_s + 1)
    assert status_json(s)["workers"] == {}
    client = redis.Redis.from_url(s.redis_url.get_secret_value())
    assert client.scard(workers_set(s.key_prefix)) == 0  # pruned from the set as well
