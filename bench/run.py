"""The end-to-end benchmark: offered rates -> throughput, event-to-Redis latency, CPU, memory.

Each measurement starts a fresh worker process (own app id, topics and Redis
prefix) on the local broker and Redis, warms it up, then offers load and reads
the worker's own counters and latency histogram (``serving.latency``) over the
measurement window. CPU seconds and peak RSS come from /proc of the worker.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from bench.load import produce
from serving.keys import worker_key
from serving.latency import diff, percentiles
from streamrec.settings import Settings
from streams.admin import ensure_topics

CLK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    pipeline: str  # "streamrec" or "naive"
    workers: int
    offered_rate: float | None  # events/s; None = as fast as possible
    events: int
    seconds: float
    throughput: float  # events/s, all workers
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_s_per_1k: float = 0.0
    peak_rss_mb: float = 0.0

    def row(self) -> str:
        rate = f"{self.offered_rate:.0f}" if self.offered_rate else "max"
        lat = self.latency_ms
        return (f"{self.pipeline:10s} {self.workers:>2d}w  offered {rate:>6s}/s  "
                f"processed {self.throughput:8.0f}/s  p50 {lat.get('p50', 0):6.0f}  "
                f"p95 {lat.get('p95', 0):6.0f}  p99 {lat.get('p99', 0):6.0f}  "
                f"max {lat.get('max', 0):6.0f} ms  cpu {self.cpu_s_per_1k:5.2f} s/1k  "
                f"rss {self.peak_rss_mb:5.0f} MB")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Fleet:
    """Worker processes (streamrec or naive) sharing one app id, topics and prefix."""

    def __init__(self, base: Settings, bundle: Path, pipeline: str, workers: int, log_dir: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.settings = base.model_copy(update=dict(
            app_id=f"bench-{run}", clicks_topic=f"bench-{run}-clicks", dlq_topic=f"bench-{run}-dlq",
            model_updates_topic=f"bench-{run}-models", key_prefix=f"bench:{run}:",
            rebalance_timeout_s=5.0, session_timeout_s=10.0, producer_max_batch_bytes=1))
        asyncio.run(ensure_topics(self.settings))
        self.redis = redis.Redis.from_url(base.redis_url.get_secret_value(), decode_responses=True)
        module = "streamrec.cli" if pipeline == "streamrec" else "bench.naive"
        args = ["worker"] if pipeline == "streamrec" else []
        self.ids = [f"{pipeline}-{run}-{n}" for n in range(workers)]
        self.procs = []
        for wid in self.ids:
            env = {**os.environ, **self.settings.to_env(), "STREAMREC_WORKER_ID": wid,
                   "STREAMREC_BUNDLE_PATH": str(bundle)}
            log = (log_dir / f"{wid}.log").open("w")
            self.procs.append(subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                                               stdout=log, stderr=subprocess.STDOUT))
        self._wait(lambda st: all("rebalanced_at" in s and "model_version" in s for s in st), 120)

    def status(self) -> list[dict[str, str]]:
        return [self.redis.hgetall(worker_key(self.settings.key_prefix, w)) for w in self.ids]

    def events(self) -> int:
        return sum(int(s.get("events", 0)) for s in self.status())

    def _wait(self, cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not cond(self.status()):
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a benchmark worker exited; see var/bench/logs")
            if time.monotonic() > deadline:
                raise TimeoutError(f"benchmark workers not ready/caught up: {self.status()}")
            time.sleep(0.02)

    def wait_events(self, n: int, timeout: float = 600) -> None:
        self._wait(lambda st: sum(int(s.get("events", 0)) for s in st) >= n, timeout)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        keys = list(self.redis.scan_iter(f"{self.settings.key_prefix}*", count=10_000))
        for lo in range(0, len(keys), 5000):
            self.redis.delete(*keys[lo:lo + 5000])


def measure(base: Settings, bundle: Path, *, pipeline: str, workers: int, rate: float | None,
            events: int, warmup: int, users: int, items: int, log_dir: Path) -> Result:
    fleet = Fleet(base, bundle, pipeline, workers, log_dir)
    s = fleet.settings
    try:
        asyncio.run(produce(s.kafka_bootstrap, s.clicks_topic, events=warmup, rate=rate, users=users,
                            items=items, run="warm", seed=1))
        fleet.wait_events(warmup)
        before, cpu0 = fleet.status(), [_cpu_s(p.pid) for p in fleet.procs]
        t0 = time.monotonic()
        asyncio.run(produce(s.kafka_bootstrap, s.clicks_topic, events=events, rate=rate, users=users,
                            items=items, run="measure", seed=2))
        fleet.wait_events(warmup + events)
        seconds = time.monotonic() - t0
        after, cpu1 = fleet.status(), [_cpu_s(p.pid) for p in fleet.procs]
        hist: dict[str, int] = {}
        for a, b in zip(after, before, strict=True):
            for k, v in diff(a, b).items():
                hist[k] = hist.get(k, 0) + v
        return Result(pipeline, workers, rate, events, seconds, events / seconds,
                      percentiles({k: str(v) for k, v in hist.items()}),
                      (sum(cpu1) - sum(cpu0)) / events * 1000,
                      max(_peak_rss_mb(p.pid) for p in fleet.procs))
    finally:
        fleet.stop()


def as_dict(results: list[Result]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
