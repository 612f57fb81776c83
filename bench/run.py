"""The end-to-end benchmark: offered rates -> throughput, event-to-Redis latency, CPU, memory.

Each measurement starts a fresh worker process (own app id, topics and Redis
prefix) on the local broker and Redis. The worker's CPU seconds come from psutil,
its peak RSS from /proc.

- At an offered rate, the worker is warmed up, then clicks are sent at that
  rate and the worker's own counters and latency histogram
  (``serving.latency``) are read over the window.
- At "max", the clicks are written to the topic first and the worker then
  drains the backlog: throughput is counted from the moment it has processed
  the warm-up events to the moment it has processed all of them, so the load
  generator (a Python producer on the same two cores) does not compete with
  the worker being timed. Event-to-Redis latency is not meaningful for a
  backlog and is not reported.

The workers use Kafka's normal producer batching for their changelog (what a
production deployment runs), not the one-record-per-batch setting that local
runs need for Tansu's changelog recovery: a benchmark never recovers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

from bench import services
from bench.load import produce
from bench.profile import Recording
from cli.harness import WorkerProcess
from cli.waiting import ProcessExited, poll_until
from serving.keys import meta_prefix
from serving.latency import FIELD, diff, percentiles
from serving.reader import RecsReader
from serving.redis_client import sync_client
from streamrec.errors import ConfigError
from streamrec.items import ItemRecord, encode_item
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streams.replay import send_paced


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
    # with new items on the items topic: the share of a sample of users' lists holding one
    new_item_lists: float | None = None
    # records per micro-batch over the measured window (the workers' own "batches" count)
    records_per_batch: float | None = None
    # at an offered rate: each stage's latency percentiles (streams.prometheus.STAGES)
    stages_ms: dict[str, dict[str, float]] | None = None
    # --profile: each worker's py-spy summary over the window (bench.profile)
    profiles: list[dict[str, object]] | None = None
    # CPU s per 1,000 events of the broker and Redis where they run on this machine
    # (bench.services), and the machine's busy cores over the window (everything on it)
    broker_cpu_s_per_1k: float | None = None
    redis_cpu_s_per_1k: float | None = None
    machine_cores_busy: float | None = None

    @property
    def per_worker(self) -> float:
        """Events/s per worker process."""
        return self.throughput / self.workers

    @property
    def per_core(self) -> float | None:
        """Events/s per busy core of the machine (workers, broker, Redis and the rest)."""
        return self.throughput / self.machine_cores_busy if self.machine_cores_busy else None

    def row(self) -> str:
        rate = f"{self.offered_rate:.0f}" if self.offered_rate else "max"
        lat = self.latency_ms
        if lat:
            lats = (f"p50 {lat['p50']:6.0f}  p95 {lat['p95']:6.0f}  p99 {lat['p99']:6.0f}  "
                    f"max {lat['max']:6.0f} ms")
        else:
            lats = f"{'(backlog drain: no latency)':45s}"
        return (f"{self.pipeline:10s} {self.workers:>2d}w  offered {rate:>6s}/s  "
                f"processed {self.throughput:8.0f}/s  {lats}  cpu {self.cpu_s_per_1k:5.2f} s/1k  "
                f"rss {self.peak_rss_mb:5.0f} MB"
                + ("" if self.records_per_batch is None else f"  {self.records_per_batch:.0f}/batch")
                + ("" if self.workers == 1 else f"  {self.per_worker:.0f}/s per worker")
                + ("" if self.per_core is None else
                   f"  {self.machine_cores_busy:.2f} cores busy, {self.per_core:.0f}/s per core")
                + "".join(f"  {n} {v:.2f} s/1k" for n, v in (("broker", self.broker_cpu_s_per_1k),
                                                               ("redis", self.redis_cpu_s_per_1k))
                          if v is not None)
                + "".join(f"\n    {name:9s} p50 {p.get('p50', 0):5.0f}  p99 {p.get('p99', 0):5.0f} ms"
                          for name, p in (self.stages_ms or {}).items())
                + ("" if self.new_item_lists is None else
                   f"  new item in {self.new_item_lists:.0%} of lists"))


@dataclass(frozen=True)
class _Mark:
    """What a measurement window needs at its two ends."""

    at: float  # monotonic
    events: int
    batches: int
    workers_cpu: float
    services_cpu: tuple[float | None, ...]  # broker, Redis (None: not on this machine)
    machine_busy: float


def _mark(fleet: Fleet, events: int | None = None) -> _Mark:
    return _Mark(time.monotonic(), fleet.events() if events is None else events, fleet.batches(),
                 sum(_cpu_s(p.pid) for p in fleet.procs),
                 tuple(svc.cpu_s() for svc in fleet.services), services.machine_busy_s())


def _window(fleet: Fleet, rate: float | None, a: _Mark, b: _Mark,
            latency: dict[str, float], profiles: list[dict[str, object]] | None) -> Result:
    n, seconds = b.events - a.events, b.at - a.at
    per_1k = [None if x is None or y is None else round((y - x) / n * 1000, 3)
              for x, y in zip(a.services_cpu, b.services_cpu, strict=True)]
    return Result(fleet.pipeline, len(fleet.ids), rate, n, seconds, n / seconds, latency,
                  (b.workers_cpu - a.workers_cpu) / n * 1000,
                  max(_peak_rss_mb(p.pid) for p in fleet.procs),
                  records_per_batch=round(n / (b.batches - a.batches), 1) if b.batches > a.batches else None,
                  profiles=profiles, broker_cpu_s_per_1k=per_1k[0], redis_cpu_s_per_1k=per_1k[1],
                  machine_cores_busy=round((b.machine_busy - a.machine_busy) / seconds, 2))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _peak_rss_mb(pid: int) -> float:
    """Process ``pid``'s peak resident set (MiB). Read from /proc's VmHWM by hand: psutil
    reports the current RSS only, and the peak of a process still running is nowhere else."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Fleet:
    """Worker processes (streamrec or naive) sharing one app id, topics and prefix."""

    def __init__(self, base: Settings, bundle: Path, pipeline: str, workers: int, log_dir: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.settings = base.model_copy(update={
            "app_id": f"bench-{run}", "clicks_topic": f"bench-{run}-clicks",
            "dlq_topic": f"bench-{run}-dlq", "model_updates_topic": f"bench-{run}-models",
            "items_topic": f"bench-{run}-items",
            "key_prefix": f"bench:{run}:", "rebalance_timeout_s": 5.0, "session_timeout_s": 10.0,
            "producer_max_batch_bytes": Settings.model_fields["producer_max_batch_bytes"].default})
        asyncio.run(ensure_topics(self.settings))
        self.redis = sync_client(base.redis_url.get_secret_value(), base.redis_cluster,
                                 decode_responses=True)
        self.bundle, self.pipeline, self.log_dir = bundle, pipeline, log_dir
        self.ids = [f"{pipeline}-{run}-{n}" for n in range(workers)]
        self.workers: list[WorkerProcess] = []
        self.services = services.find(base)

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [w.proc for w in self.workers]

    def start(self) -> None:
        module, args = (("cli", ("worker",)) if self.pipeline == "streamrec"
                        else ("bench.naive", ()))
        for wid in self.ids:
            self.workers.append(WorkerProcess.start(
                self.settings.model_copy(update={"worker_id": wid}), self.log_dir / f"{wid}.log",
                bundle=self.bundle, module=module, args=args))
        self.wait_until(lambda st: all("rebalanced_at" in s and "model_version" in s for s in st), 120)

    def status(self) -> list[dict[str, str]]:
        return [w.status() for w in self.workers] or [{} for _ in self.ids]

    def latency(self) -> list[dict[str, dict[str, int]]]:
        """Each worker's latency histograms now (``lat_le_{ms}`` counts), end to end
        (``"total"``) and, for streamrec workers, by stage (``/metrics``); the naive
        baseline keeps its end-to-end histogram in its status hash."""
        if self.pipeline == "streamrec":
            return [w.stage_fields() for w in self.workers]
        return [{"total": {k: int(v) for k, v in st.items() if k.startswith(FIELD)}}
                for st in self.status()]

    def events(self) -> int:
        return sum(int(s.get("events", 0)) for s in self.status())

    def batches(self) -> int:
        return sum(int(s.get("batches", 0)) for s in self.status())

    def wait_until(self, cond: Callable[[list[dict[str, str]]], bool], timeout: float) -> None:
        try:
            poll_until(self.status, cond, timeout=timeout, procs=self.procs,
                       what="benchmark workers", interval=0.02)
        except ProcessExited as e:
            raise RuntimeError(f"a benchmark worker exited ({e}); see {self.log_dir}") from None

    def wait_events(self, n: int, timeout: float = 600) -> tuple[float, int]:
        """Wait until ``n`` events are processed; (monotonic time, count) when first seen."""
        self.wait_until(lambda st: sum(int(s.get("events", 0)) for s in st) >= n, timeout)
        return time.monotonic(), self.events()

    def stop(self) -> None:
        for w in self.workers:
            w.proc.terminate()
        for w in self.workers:
            w.stop()
        s = self.settings
        keys = list(self.redis.scan_iter(f"{s.key_prefix}*", count=10_000))
        if s.redis_cluster:  # the keys that are not lists: the prefix as a hash tag
            keys += self.redis.scan_iter(f"{meta_prefix(s.key_prefix, True)}*", count=10_000)
        for lo in range(0, len(keys), 5000):
            self.redis.delete(*keys[lo:lo + 5000])


def measure(base: Settings, bundle: Path, *, pipeline: str, workers: int, rate: float | None,
            events: int, warmup: int, users: int, items: int | Sequence[str], log_dir: Path,
            new_items: Sequence[ItemRecord] = (), profile: bool = False) -> Result:
    """One run; ``new_items``: items-topic records published before the workers start (a
    worker reads the whole catalogue before its first list, so they are live throughout)."""
    fleet = Fleet(base, bundle, pipeline, workers, log_dir)
    s = fleet.settings
    try:
        if new_items:
            asyncio.run(send_paced(s, s.items_topic, ((r.item_id.encode(), encode_item(r))
                                                      for r in new_items)))
        result = _paced(fleet, rate, events, warmup, users, items, profile) if rate else _drain(
            fleet, events, warmup, users, items, profile)
        if new_items:
            result = replace(result, new_item_lists=_new_item_share(
                fleet, {r.item_id for r in new_items}, users))
        return result
    finally:
        fleet.stop()


def _new_item_share(fleet: Fleet, new: set[str], users: int, sample: int = 1000) -> float:
    """The share of (up to ``sample``) users' stored lists that hold one of the ``new`` items."""
    reader = RecsReader(fleet.redis, fleet.settings.key_prefix, fleet.settings.redis_cluster)
    lists = [r for u in range(min(users, sample)) if (r := reader.get_recommendations(f"u{u}"))]
    return sum(any(i in new for i in r.items) for r in lists) / max(len(lists), 1)


def _paced(fleet: Fleet, rate: float, events: int, warmup: int, users: int,
           items: int | Sequence[str], profile: bool = False) -> Result:
    """Clicks offered at ``rate``/s after a warm-up at the same rate; latency from the
    workers' histograms over the measured clicks only; ``profile``: each worker sampled by
    py-spy over the measured clicks (:mod:`bench.profile`)."""
    s = fleet.settings
    fleet.start()
    asyncio.run(produce(s, s.clicks_topic, events=warmup, rate=rate, users=users,
                        items=items, run="warm", seed=1))
    fleet.wait_events(warmup)
    before, start = fleet.latency(), _mark(fleet)
    recordings = _record(fleet) if profile else []
    asyncio.run(produce(s, s.clicks_topic, events=events, rate=rate, users=users,
                        items=items, run="measure", seed=2))
    fleet.wait_events(warmup + events)
    end, after = _mark(fleet), fleet.latency()
    profiles = [r.stop().as_dict() for r in recordings] or None
    hist: dict[str, dict[str, int]] = {}
    for a, b in zip(after, before, strict=True):
        for name, fields in a.items():
            into = hist.setdefault(name, {})
            for k, v in diff(fields, b.get(name, {})).items():
                into[k] = into.get(k, 0) + v
    total = percentiles({k: str(v) for k, v in hist.pop("total").items()})
    stages = {name: percentiles({k: str(v) for k, v in h.items()}) for name, h in hist.items()}
    return replace(_window(fleet, rate, start, end, total, profiles), stages_ms=stages or None)


def _record(fleet: Fleet) -> list[Recording]:
    """py-spy attached to each worker of ``fleet`` (its collapsed stacks beside its log)."""
    return [Recording(w.proc.pid, fleet.log_dir / f"{wid}.collapsed")
            for w, wid in zip(fleet.workers, fleet.ids, strict=True)]


def _drain(fleet: Fleet, events: int, warmup: int, users: int, items: int | Sequence[str],
           profile: bool = False) -> Result:
    """Saturation: write warm-up + measured clicks first, then time the worker draining
    them; ``profile``: each worker sampled by py-spy over the drain (:mod:`bench.profile`)."""
    s = fleet.settings
    asyncio.run(produce(s, s.clicks_topic, events=warmup + events, rate=None,
                        users=users, items=items, run="drain", seed=2))
    fleet.start()
    _, n0 = fleet.wait_events(warmup)
    start = _mark(fleet, n0)
    recordings = _record(fleet) if profile else []
    _, n1 = fleet.wait_events(warmup + events)
    end = _mark(fleet, n1)
    profiles = [r.stop().as_dict() for r in recordings] or None
    return _window(fleet, None, start, end, {}, profiles)


def as_dict(results: list[Result]) -> list[dict[str, object]]:
    return [{**asdict(r), "per_worker": r.per_worker, "per_core": r.per_core} for r in results]


def machine() -> dict[str, object]:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def write_results(out: Path, report: dict[str, object]) -> None:
    """The results file every benchmark writes (JSON, with the machine it ran on)."""
    import orjson

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps({**report, "machine": machine()}, option=orjson.OPT_INDENT_2))


def run_bench(base: Settings, bundle: Path | None, *, offered: list[float | None], seconds: float,
              max_events: int, workers: Sequence[int], naive: bool, users: int, log_dir: Path,
              on_result: Callable[[Result], None] = lambda r: None,
              new_items: int = 0, profile: bool = False) -> dict[str, object]:
    """``streamrec bench``: each offered rate (None = as fast as possible) on streamrec's
    worker, then the naive baseline at max and 1000/s; a report with the throughput ratio.
    ``new_items`` > 0: that many new items on the items topic before each streamrec run
    (each with a random bundle item's attributes), clicked like the bundle's items."""
    import numpy as np

    from bench.bundle import random_bundle
    from bench.funnel import new_item_records
    from serving.bundle import load_bundle

    log_dir.mkdir(parents=True, exist_ok=True)
    path = bundle or random_bundle(log_dir.parent)
    loaded = load_bundle(path)
    records = new_item_records(loaded, new_items, np.random.default_rng(0),
                               ts_ms=int(time.time() * 1000))
    if new_items and not records:
        raise ConfigError(f"--new-items needs a bundle that can embed new items (an item tower "
                          f"and item attributes); {path} has none")
    # clicks on items the model knows, whatever their ids, and on the new ones
    items = list(loaded.vocab.ids) + [r.item_id for r in records]
    plan: list[tuple[str, int, float | None]] = [("streamrec", n, r) for n in workers for r in offered]
    if naive:
        plan += [("naive", 1, None), ("naive", 1, 1000.0)]
    results = []
    for pipeline, n, rate in plan:
        events = max_events if rate is None else int(rate * seconds)
        if pipeline == "naive":
            events = min(events, 3000)
        r = measure(base, path, pipeline=pipeline, workers=n, rate=rate, events=events,
                    warmup=min(2000, events // 4 + 100), users=users, items=items, log_dir=log_dir,
                    new_items=records if pipeline == "streamrec" else (),
                    profile=profile and pipeline == "streamrec")
        results.append(r)
        on_result(r)
    report: dict[str, object] = {
        "bundle": str(path), "items": len(items), "new_items": len(records), "users": users,
        "services": {svc.name: svc.where for svc in services.find(base)},
        "results": as_dict(results)}
    # against the one-worker drain where there is one: the naive baseline is one process
    drains = [r for r in results if r.pipeline == "streamrec" and r.offered_rate is None]
    fast = max((r.throughput for r in drains if r.workers == 1), default=0) or \
        max((r.throughput for r in drains), default=0)
    slow = max((r.throughput for r in results if r.pipeline == "naive" and r.offered_rate is None),
               default=0)
    if fast and slow:
        report["throughput_ratio_vs_naive"] = round(fast / slow, 1)
    return report
