"""Integration fixtures: real Tansu/Kafka broker and real Redis on loopback.

Every test run gets its own app id, topic names and Redis key prefix, so runs
never collide with each other or with the demo.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer

from cli.harness import WorkerProcess
from cli.waiting import ProcessExited, WaitTimedOut
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def services() -> None:
    s = Settings()
    host, port = s.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    if not _port_open(host, int(port)):
        pytest.fail(f"no Kafka broker on {s.kafka_bootstrap}: run 'make up' (or 'make test')")
    redis.Redis.from_url(s.redis_url.get_secret_value()).ping()


@pytest.fixture
def make_settings(services: None) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        run = uuid.uuid4().hex[:10]
        base: dict[str, object] = dict(  # noqa: C408 - keyword style reads as settings
            app_id=f"t-{run}", clicks_topic=f"t-{run}-clicks", dlq_topic=f"t-{run}-dlq",
            model_updates_topic=f"t-{run}-models", items_topic=f"t-{run}-items", impressions_topic=f"t-{run}-impressions", key_prefix=f"test:{run}:", topic_partitions=4,
            worker_id=f"w-{run}", rebalance_timeout_s=3.0, session_timeout_s=10.0,
            producer_max_batch_bytes=1)  # Tansu: see Settings.producer_max_batch_bytes
        base.update(overrides)
        s = Settings(**base)  # type: ignore[arg-type]
        asyncio.run(ensure_topics(s))
        return s
    return make


class WorkerProc(WorkerProcess):
    """The shared harness (:mod:`cli.harness`), failing the test with the log's tail."""

    def wait_for(self, cond: Callable[[dict[str, str]], bool], timeout: float, what: str,
                 interval: float = 0.2) -> dict[str, str]:
        try:
            return super().wait_for(cond, timeout, what, interval)
        except (ProcessExited, WaitTimedOut) as e:
            pytest.fail(f"{e}\n" + self.log.read_text()[-3000:])


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings, Path], WorkerProc]]:
    started: list[WorkerProc] = []

    def start(settings: Settings, bundle: Path) -> WorkerProc:
        w = WorkerProc.start(settings, tmp_path / f"{settings.worker_id}.log", bundle=bundle)
        assert isinstance(w, WorkerProc)
        started.append(w)
        w.wait_for(lambda st: "model_version" in st, 90, "worker start")
        return w

    yield start
    admin = redis.Redis.from_url(Settings().redis_url.get_secret_value())  # workers may use ACL users
    for w in started:
        w.stop()
        admin.delete(*admin.keys(f"{w.settings.key_prefix}*") or ["-"])


async def _consume(bootstrap: str, topic: str, n: int, timeout: float) -> list[tuple[bytes | None, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[tuple[bytes | None, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            out += [(m.key, m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


def consume(bootstrap: str, topic: str, n: int, timeout: float = 30) -> list[tuple[bytes | None, bytes]]:
    """Read at least ``n`` records from the start of ``topic`` (fewer if the timeout passes)."""
    return asyncio.run(_consume(bootstrap, topic, n, timeout))


def send_histories(s: Settings, histories: Mapping[str, Sequence[str]], now_ms: int,
                   extra: Sequence[tuple[bytes, bytes]] = ()) -> int:
    """Each user's items as clicks in order (keyed by user, one ms apart), then ``extra``
    records; returns how many records were sent."""
    from streamrec.events import ClickEvent, encode_event
    from streams.replay import send_raw

    clicks = [(u.encode(), encode_event(ClickEvent(f"{u}/{k}", u, i, now_ms + k)))
              for u, h in histories.items() for k, i in enumerate(h)]
    clicks += list(extra)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))
    return len(clicks)
