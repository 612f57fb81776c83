"""Finding where a benchmark's broker and Redis run (:mod:`bench.services`)."""

from __future__ import annotations

import os
import socket

from bench.services import Service, find, listener, machine_busy_s
from streamrec.settings import Settings


def test_a_port_this_process_listens_on_is_found_with_its_pid() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listener("127.0.0.1", port) == os.getpid()
        assert listener("localhost", port) == os.getpid()
        svc = Service("redis", f"127.0.0.1:{port}", os.getpid())
        assert "this machine" in svc.where and svc.cpu_s() is not None


def test_a_port_nobody_listens_on_and_a_remote_host_have_no_local_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
    assert listener("127.0.0.1", port) is None
    assert listener("192.0.2.1", 6379) is None  # TEST-NET-1: never this machine
    assert listener("no-such-host.invalid", 6379) is None
    remote = Service("broker", "192.0.2.1:9092", None)
    assert "not a process on this machine" in remote.where and remote.cpu_s() is None


def test_the_settings_name_the_broker_and_redis_addresses() -> None:
    s = Settings(kafka_bootstrap="192.0.2.1:9093,192.0.2.2:9093",
                 redis_url="redis://192.0.2.3:6380/0")
    broker, redis = find(s)
    assert (broker.address, broker.pid) == ("192.0.2.1:9093", None)
    assert (redis.address, redis.pid) == ("192.0.2.3:6380", None)
    assert machine_busy_s() > 0
