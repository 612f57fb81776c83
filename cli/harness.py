"""Worker processes started from settings: the one harness of the demo, the benchmarks and the tests.

A :class:`WorkerProcess` is a ``streamrec worker`` (or any module that reports
to the same status hash, such as ``bench.naive``) run in a child process whose
environment is exactly ``settings.to_env()``, logging to a file, and watched
through the status hash it writes to Redis and its HTTP port (``/metrics``,
``/ready``, …). Unless the settings name a web port, each worker gets a free
one, so several can run on one machine, and unless they name a data directory,
each gets its own beside its log (``{worker_id}-data``: RocksDB allows one
process per database, and a worker restarted under the same name finds its
table store again).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

from cli.waiting import poll_until, stop_process
from serving.keys import meta_prefix, worker_key
from serving.latency import scrape_fields
from serving.redis_client import SyncClient, sync_client
from streamrec.settings import Settings

Status = dict[str, str]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    settings: Settings  # ``worker_id`` set: it names the status hash
    proc: subprocess.Popen[bytes]
    log: Path
    ended_by_caller: bool = False  # killed or stopped on purpose (not a crash)
    client: SyncClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = sync_client(self.settings.redis_url.get_secret_value(),
                                  self.settings.redis_cluster, decode_responses=True)

    @classmethod
    def start(cls, settings: Settings, log: Path, *, bundle: Path | None = None,
              module: str = "cli", args: Sequence[str] = ("worker",),
              env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Self:
        """Start ``python -m module args`` with ``settings`` (and ``bundle``, extra ``env``),
        in ``cwd`` (default: this process's working directory)."""
        if not settings.worker_id:
            raise ValueError("a harnessed worker needs settings.worker_id (its status hash)")
        if bundle is not None:
            settings = settings.model_copy(update={"bundle_path": bundle})
        if "web_port" not in settings.model_fields_set:
            settings = settings.model_copy(update={"web_port": free_port()})
        if settings.data_dir is None:  # one per worker name: a restart under the name reuses it
            settings = settings.model_copy(update={"data_dir": log.parent / f"{settings.worker_id}-data"})
        log.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a worker killed after a failed start keeps every line it wrote
        child_env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1", **(env or {})}
        if cwd is not None:  # the code is imported from here, not from the working directory
            child_env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(__file__).resolve().parents[1]), child_env.get("PYTHONPATH", "")])
        with log.open("a") as f:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], env=child_env,
                                    stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
        return cls(settings, proc, log)

    @property
    def name(self) -> str:
        return self.settings.worker_id or str(self.proc.pid)

    @property
    def key(self) -> str:
        return worker_key(meta_prefix(self.settings.key_prefix, self.settings.redis_cluster),
                          self.name)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> Status:
        return self.client.hgetall(self.key)  # type: ignore[return-value]

    def wait_for(self, cond: Callable[[Status], bool], timeout: float, what: str,
                 interval: float = 0.2) -> Status:
        """Poll the status until ``cond`` holds (raises ``ProcessExited``/``WaitTimedOut``)."""
        return poll_until(self.status, cond, timeout=timeout, procs=[self.proc], what=what,
                          interval=interval)

    def wait_ready(self, timeout: float = 120) -> Status:
        """Until the worker owns partitions and serves a model."""
        return self.wait_for(lambda st: "rebalanced_at" in st and "model_version" in st, timeout,
                             f"worker {self.name} ready")

    def wait_events(self, n: int, timeout: float = 120) -> Status:
        return self.wait_for(lambda st: int(st.get("events", 0)) >= n, timeout, f"{n} events")

    def kill(self) -> None:
        self.ended_by_caller = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``; a paused worker is resumed first."""
        self.ended_by_caller = True
        if self.alive:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        stop_process(self.proc, timeout)

    @property
    def token(self) -> str | None:
        """The bearer token this harness sends (the first of ``STREAMREC_WEB_TOKENS``)."""
        return next(iter(self.settings.web_token_values), None)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET http://127.0.0.1:{web_port}{path}``: (status, body); HTTP errors are returned.
        The worker's token goes along where it has tokens."""
        url = f"http://127.0.0.1:{self.settings.web_port}{path}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ready_code(self) -> int:
        """``/ready``'s HTTP status, 0 while the worker is not listening yet."""
        try:
            return self.get("/ready", timeout=2)[0]
        except OSError:
            return 0

    def metric(self, name: str, default: float | None = None) -> float:
        """An unlabelled metric's value on ``/metrics``. Where the worker does not answer or
        lacks the metric: ``default`` if given, else the error (``OSError``, ``KeyError``)."""
        try:
            body = self.get("/metrics")[1].decode()
        except OSError:
            if default is None:
                raise
            return default
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        if default is None:
            raise KeyError(f"{self.name}: no metric {name} on /metrics")
        return default

    def latency_fields(self) -> dict[str, int]:
        """The worker's event → Redis latency histogram as ``lat_le_{ms}`` counts (``/metrics``)."""
        return scrape_fields(f"127.0.0.1:{self.settings.web_port}", timeout_s=5.0, token=self.token)

    def stage_fields(self) -> dict[str, dict[str, int]]:
        """The end-to-end histogram (``"total"``) and each stage's
        (``streamrec_event_stage_seconds``) as ``lat_le_{ms}`` counts, from one scrape."""
        from serving.latency import fields_from_prometheus, scrape
        from streams.prometheus import STAGES, StageLatency

        text = scrape(f"127.0.0.1:{self.settings.web_port}", timeout_s=5.0, token=self.token)
        out = {"total": fields_from_prometheus(text)}
        for stage in STAGES:
            out[stage] = fields_from_prometheus(text, StageLatency.name, {"stage": stage})
        return out

    def tail(self, n: int = 12000) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-n:]
