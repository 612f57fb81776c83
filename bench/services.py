"""Where a benchmark's broker and Redis run, and what they cost it.

A benchmark's throughput per core depends on everything sharing the cores: on a
development machine the broker and Redis run beside the workers. This finds the
local processes that listen on the broker's and Redis's ports (loopback or any
local address), so a run can report their CPU per 1,000 events next to the
workers', and the machine's busy cores over the window. A service on another
host is reported as remote, with no CPU figure.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil

from streamrec.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str  # "broker" or "redis"
    address: str  # host:port as configured
    pid: int | None  # the local process listening there; None: remote or not found

    @property
    def where(self) -> str:
        if self.pid is None:
            return f"{self.address} (not a process on this machine)"
        return f"{self.address} (this machine, pid {self.pid}: {_name(self.pid)})"

    def cpu_s(self) -> float | None:
        """The process's user + system CPU seconds so far (None: not local, or gone)."""
        if self.pid is None:
            return None
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system)


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


def _local_addresses() -> set[str]:
    addrs = {"0.0.0.0", "::", "127.0.0.1", "::1", "localhost"}
    for nics in psutil.net_if_addrs().values():
        addrs.update(a.address for a in nics if a.family in (socket.AF_INET, socket.AF_INET6))
    return addrs


def listener(host: str, port: int) -> int | None:
    """The pid of the process on this machine listening on ``host:port``, if any."""
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        return None
    local = _local_addresses()
    if not ips & local:
        return None
    for c in psutil.net_connections(kind="tcp"):
        if (c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
                and (c.laddr.ip in ips or c.laddr.ip in ("0.0.0.0", "::"))):
            return int(c.pid)
    return None


def find(settings: Settings) -> list[Service]:
    """The broker (its first bootstrap address) and Redis of ``settings``."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    b_host, _, b_port = first.rpartition(":")
    r = urlsplit(settings.redis_url.get_secret_value())
    r_host, r_port = r.hostname or "127.0.0.1", r.port or 6379
    return [Service("broker", first, listener(b_host or first, int(b_port or 9092))),
            Service("redis", f"{r_host}:{r_port}", listener(r_host, r_port))]


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, all but idle and iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))
