"""Fixtures of the fault suite (``make faults``): one scenario = own Redis, topics, prefix."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.bundle import load_bundle
from serving.reader import RecsReader
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streams.consumer import SEEK_GAVE_UP
from tests.faults.harness import Cluster, PersistentBroker, RedisServer, Workload, produce

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 4


@dataclass
class Scenario:
    settings: Settings
    redis: RedisServer
    cluster: Cluster
    work: Workload
    broker: PersistentBroker | None = None

    @property
    def reader(self) -> RecsReader:
        import redis

        client = redis.Redis.from_url(self.redis.url, socket_timeout=2, socket_connect_timeout=2)
        return RecsReader(client, self.settings.key_prefix)

    def send(self, records: list[tuple[bytes | None, bytes | None]], producer: str = "murmur2") -> None:
        produce(producer, self.settings, records, PARTITIONS)

    def wait_caught_up(self, timeout: float = 90) -> float:
        """Wait until every user's list reflects the user's last event; returns seconds."""
        t0 = time.monotonic()
        seen = 0.0
        while time.monotonic() - t0 < timeout:
            try:
                seen = self.work.caught_up(self.reader)
            except Exception:  # noqa: BLE001 - Redis may be down in the scenario
                seen = 0.0
            if seen == 1.0:
                return time.monotonic() - t0
            if self.cluster.exited():
                break
            time.sleep(0.25)
        for w in self.cluster.alive():  # ask each worker what it waits on (streams/diagnostics.py)
            w.proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        try:
            problems = self.work.problems(self.reader)[:10]
        except Exception as e:  # noqa: BLE001
            problems = [repr(e)]
        pytest.fail(f"caught up {seen:.0%} after {time.monotonic() - t0:.0f}s; "
                    f"{self.cluster.exited()}; {problems}\n{self.cluster.logs()}")

    def check(self) -> None:
        """Every promise: lists right for every user, and no worker ended on its own."""
        assert not self.cluster.exited(), self.cluster.logs()
        problems = self.work.problems(self.reader)
        assert not problems, f"{len(problems)} users wrong: {problems[:10]}\n{self.cluster.logs()}"
        # a seek that gave up waiting for the fetch loop (streams/consumer.py) may lose
        # records, and it stalled consumption for its whole timeout
        stalled = [w.name for w in self.cluster.workers if SEEK_GAVE_UP in w.log.read_text(errors="replace")]
        assert not stalled, f"{stalled}: {SEEK_GAVE_UP!r}\n{self.cluster.logs()}"


@pytest.fixture
def scenario(tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[Callable[..., Scenario]]:
    made: list[Scenario] = []

    def make(users: int = 200, persistent_broker: bool = False, **overrides: object) -> Scenario:
        server = RedisServer(tmp_path)
        server.start()
        run = uuid.uuid4().hex[:10]
        broker = None
        if persistent_broker:  # a broker of the scenario's own, which it may kill and restart
            broker = PersistentBroker(tmp_path)
            broker.start()
            overrides.setdefault("kafka_bootstrap", broker.bootstrap)
        base: dict[str, object] = dict(  # noqa: C408 - keyword style reads as settings
            app_id=f"f-{run}", clicks_topic=f"f-{run}-clicks", dlq_topic=f"f-{run}-dlq",
            model_updates_topic=f"f-{run}-models", items_topic=f"f-{run}-items",
            key_prefix=f"fault:{run}:",
            topic_partitions=PARTITIONS, redis_url=server.url,
            # documented failover settings (docs/operations.md, "Failover and restarts"): a dead
            # worker is noticed
            # after the session timeout, and a new group forms within the rebalance timeout
            rebalance_timeout_s=3.0, session_timeout_s=6.0,
            producer_max_batch_bytes=1)  # Tansu: see Settings.producer_max_batch_bytes
        base.update(overrides)
        settings = Settings(**base)  # type: ignore[arg-type]
        asyncio.run(ensure_topics(settings))
        items = load_bundle(tiny_bundle_dir).vocab.ids
        sc = Scenario(settings, server, Cluster(settings, tiny_bundle_dir, tmp_path),
                      Workload(items, users, seed=len(made)), broker)
        made.append(sc)
        return sc

    yield make
    for sc in made:
        sc.cluster.stop()
        sc.redis.stop()
        if sc.broker is not None:
            sc.broker.stop()
