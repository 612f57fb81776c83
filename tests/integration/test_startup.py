"""A worker that cannot start says why in one line and exits, instead of crashing in Faust."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.kafka import ensure_topics, partition_counts
from streamrec.settings import Settings
from streams.startup import changelog_topic
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration


def exit_and_log(w: WorkerProc, timeout: float = 60) -> tuple[int, str]:
    rc = w.proc.wait(timeout)
    return rc, w.log.read_text(errors="replace")


def test_a_held_web_port_stops_the_start_with_one_line(
    make_settings: Callable[..., Settings], tiny_bundle_dir: Path, tmp_path: Path,
) -> None:
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        s = make_settings(web_port=port)
        w = WorkerProc.start(s, tmp_path / "w.log", bundle=tiny_bundle_dir)
        rc, log = exit_and_log(w)
    assert rc == 1, log
    assert f"error: the web port {s.web_bind}:{port} is in use" in log  # 127.0.0.1 unless set
    assert "Traceback" not in log


def test_a_changelog_with_too_few_partitions_is_refused(
    make_settings: Callable[..., Settings], tiny_bundle_dir: Path, tmp_path: Path,
) -> None:
    s = make_settings()  # 4 partitions
    changelog = changelog_topic(s)
    asyncio.run(ensure_topics(s.model_copy(update={"topic_partitions": 1}), [changelog],
                              compacted=True))
    assert asyncio.run(partition_counts(s, [changelog])) == {changelog: 1}
    w = WorkerProc.start(s, tmp_path / "w.log", bundle=tiny_bundle_dir)
    rc, log = exit_and_log(w)
    assert rc == 1, log
    assert f"error: topic {changelog} has 1 partitions but STREAMREC_TOPIC_PARTITIONS is 4" in log


def test_a_worker_creates_its_changelog_with_the_clicks_partitions(
    make_settings: Callable[..., Settings], tiny_bundle_dir: Path, tmp_path: Path,
) -> None:
    s = make_settings()
    w = WorkerProc.start(s, tmp_path / "w.log", bundle=tiny_bundle_dir)
    try:
        w.wait_ready(90)
        counts = asyncio.run(partition_counts(s, [s.clicks_topic, changelog_topic(s)]))
        assert counts == {s.clicks_topic: 4, changelog_topic(s): 4}
    finally:
        w.stop()
