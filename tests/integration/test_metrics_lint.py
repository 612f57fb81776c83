"""A live worker's ``/metrics`` through ``promtool check metrics`` (Prometheus's own lint),
and the dashboard's and the alert rules' metric names against what it exports."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.bundle import load_bundle
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc
from tests.promql import (
    SYNTHETIC,
    alert_exprs,
    dashboard_exprs,
    exported_names,
    metric_names,
    promtool,
)

pytestmark = pytest.mark.integration


def test_a_live_workers_metrics_pass_promtool_and_feed_the_dashboard(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    tool = promtool()
    s = make_settings()
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    w = start_worker(s, tiny_bundle_dir)
    now = int(time.time() * 1000)
    records = [(f"u{u}".encode(), encode_event(ClickEvent(f"e{u}-{i}", f"u{u}", items[u + i], now)))
               for i in range(3) for u in range(4)]
    records.append((b"u0", b"{not json"))  # a dead letter: its labelled counter gets a series
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    w.wait_events(len(records))
    status, body = w.get("/metrics")
    assert status == 200
    text = body.decode()
    lint = subprocess.run([tool, "check", "metrics"], input=text, check=False,
                          capture_output=True, text=True)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr

    names = exported_names(text)
    assert {"process_cpu_seconds_total", "python_gc_collections_total",
            "streamrec_changelog_applied_total", "streamrec_batch_size_records_bucket",
            "streamrec_redis_retries_total", "streamrec_dead_letter_write_failures_total",
            "streamrec_model_created_timestamp_seconds"} <= names
    for where, expr in [*dashboard_exprs(), *alert_exprs()]:
        unknown = metric_names(expr) - names - SYNTHETIC
        assert not unknown, f"{where}: {sorted(unknown)} not on a live worker's /metrics"
