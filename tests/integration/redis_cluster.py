"""A real local Redis Cluster for tests: six ``redis-server`` processes on free loopback ports,
three masters and three replicas, made a cluster by ``redis-cli --cluster create``.

``LocalCluster.start(tmp)`` returns once every node reports ``cluster_state:ok``;
``stop()`` ends the processes it started. ``kill_master`` SIGKILLs a master (its replica
takes over after ``node_timeout_ms`` and an election: ``wait_ok`` waits for that).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from cli.harness import free_port


def _ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (client and cluster-bus ports alike)."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


@dataclass
class LocalCluster:
    dir: Path
    ports: list[int]  # client ports, in start order
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    node_timeout_ms: int = 2000

    @classmethod
    def start(cls, tmp: Path, nodes: int = 6, node_timeout_ms: int = 2000,
              timeout: float = 60) -> LocalCluster:
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (apt-get install redis-server)")
        tmp.mkdir(parents=True, exist_ok=True)
        ports = _ports(2 * nodes)
        c = cls(tmp, ports[:nodes], node_timeout_ms=node_timeout_ms)
        try:
            for port, bus in zip(c.ports, ports[nodes:], strict=True):
                c.procs[port] = subprocess.Popen(
                    ["redis-server", "--port", str(port), "--cluster-port", str(bus),
                     "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", str(tmp / f"nodes-{port}.conf"),
                     "--cluster-node-timeout", str(node_timeout_ms), "--appendonly", "no",
                     "--save", "", "--dir", str(tmp), "--logfile", str(tmp / f"redis-{port}.log")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port in c.ports:
                c._wait(lambda port=port: c.client(port).ping(), timeout, f"redis-server :{port}")  # type: ignore[misc]
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p in c.ports],
                            "--cluster-replicas", "1", "--cluster-yes"],
                           check=True, capture_output=True, timeout=timeout)
            c.wait_ok(timeout)
        except BaseException:
            c.stop()
            raise
        return c

    @property
    def url(self) -> str:
        """A seed node's URL (the first node started)."""
        return self.node_url(self.ports[0])

    @staticmethod
    def node_url(port: int) -> str:
        return f"redis://127.0.0.1:{port}"

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2,
                           decode_responses=True)

    def live(self) -> list[int]:
        return [p for p in self.ports if self.procs[p].poll() is None]

    def nodes(self, via: int | None = None) -> list[dict[str, str]]:
        """``CLUSTER NODES`` as seen by ``via`` (default: a live node): port, id, flags, and
        ``slots`` ("" for a node that serves none)."""
        text = subprocess.run(["redis-cli", "-p", str(via or self.live()[0]), "cluster", "nodes"],
                              check=True, capture_output=True, text=True, timeout=5).stdout
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            addr = parts[1].split("@")[0]
            out.append({"id": parts[0], "port": addr.rsplit(":", 1)[1], "flags": parts[2],
                        "slots": " ".join(parts[8:])})
        return out

    def masters(self) -> list[int]:
        """Client ports of the live masters that serve slots."""
        return [int(n["port"]) for n in self.nodes()
                if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"]]

    def state_ok(self, port: int) -> bool:
        info = self.client(port).execute_command("CLUSTER", "INFO")
        text = info if isinstance(info, str) else "\n".join(f"{k}:{v}" for k, v in info.items())
        return "cluster_state:ok" in text

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every live node reports ``cluster_state:ok``, three live masters serve every
        slot and each has a live replica where one is left (a promoted one has none)."""
        def ok() -> bool:
            if not all(self.state_ok(p) for p in self.live()):
                return False
            alive = {str(p) for p in self.live()}
            views = [self.nodes(p) for p in self.live()]
            for nodes in views:
                masters = [n for n in nodes if "master" in n["flags"] and n["slots"]
                           and "fail" not in n["flags"]]
                replicas = [n for n in nodes if "slave" in n["flags"] and n["port"] in alive]
                if len(masters) != 3 or any(m["port"] not in alive for m in masters):
                    return False
                if len(replicas) != len(alive) - 3:
                    return False
            # a replica that never synced its master would never take over from it
            return all("master_link_status:up" in self._info(int(r["port"]), "replication")
                       for r in views[0] if "slave" in r["flags"] and r["port"] in alive)
        self._wait(ok, timeout, "cluster_state:ok")

    def _info(self, port: int, section: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), "info", section], check=True,
                              capture_output=True, text=True, timeout=5).stdout

    def kill_master(self, port: int) -> None:
        """SIGKILL the master at ``port`` (no shutdown, no failover handshake)."""
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def _wait(cond: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if cond():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError) as e:
                last = e
            time.sleep(0.1)
        raise TimeoutError(f"{what} not reached in {timeout}s (last error: {last})")


def cluster_fixture(tmp: Path, node_timeout_ms: int = 2000) -> Iterator[LocalCluster]:
    c = LocalCluster.start(tmp, node_timeout_ms=node_timeout_ms)
    try:
        yield c
    finally:
        c.stop()
