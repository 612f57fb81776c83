"""Pure parts of the fault guarantees: fencing epochs, status reports, changelog ordering,
settings that refuse typos, Kafka security arguments."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from streamrec.errors import ConfigError
from streamrec.kafka import client_kwargs, faust_credentials
from streamrec.settings import Settings, unknown_variables
from streams.fencing import Fencing
from streams.retry import StatusReporter, retry_transient
from streams.tables import SessionTable


def test_fencing_waits_for_the_epoch_and_a_later_assignment_wins() -> None:
    async def run() -> list[int]:
        counter = iter(range(1, 100))
        gate = asyncio.Event()

        async def incr() -> int:
            await gate.wait()  # Redis "down" until the gate opens
            return next(counter)

        f = Fencing(incr)
        f.on_assigned()
        waiter = asyncio.create_task(f.current())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # no batch is applied without this assignment's epoch
        f.on_assigned()  # a second rebalance before the first epoch arrived
        gate.set()
        first = await waiter
        f.on_assigned()
        return [first, await f.current()]

    first, second = asyncio.run(run())
    assert second > first


def test_status_reports_coalesce_and_survive_an_outage() -> None:
    async def run() -> list[dict[str, Any]]:
        writes: list[dict[str, Any]] = []
        fails = [RedisConnectionError("down")] * 2

        async def write(fields: Any) -> None:
            if fails:
                raise fails.pop()
            writes.append(dict(fields))

        r = StatusReporter(write)
        r.report({"a": 1})
        r.report({"b": 2, "a": 3})  # never raises, never blocks
        await asyncio.wait_for(r.wait(), 5)
        return writes

    writes = asyncio.run(run())
    merged: dict[str, Any] = {}
    for w in writes:
        merged.update(w)
    assert merged == {"a": 3, "b": 2}


def test_a_wrong_password_is_not_retried() -> None:
    async def refuse() -> None:
        raise AuthenticationError("invalid username-password pair")

    with pytest.raises(AuthenticationError):
        asyncio.run(retry_transient(refuse, first_delay=0.001))


@dataclass
class _Msg:
    partition: int = 0
    offset: int = 0


@dataclass
class _Event:
    key: bytes
    value: Any
    message: _Msg


class _FakeTable:
    """Just what SessionTable._not_older reads: the stored values and a key codec."""

    def __init__(self, data: dict[bytes, Any]) -> None:
        self.data = data
        self.stale_skipped = 0

    def _to_key(self, k: Any) -> Any:
        return k


def test_changelog_records_never_roll_a_session_back() -> None:
    table = _FakeTable({b"u1": {"seq": 5}})
    batch = [
        _Event(b"u1", {"seq": 3}, _Msg()),  # older than what we hold: a zombie's late write
        _Event(b"u1", {"seq": 6}, _Msg()),
        _Event(b"u1", {"seq": 4}, _Msg()),  # older than the record just accepted
        _Event(b"u2", {"seq": 1}, _Msg()),
        _Event(b"u2", None, _Msg()),  # tombstones follow Faust's rules
    ]
    kept = list(SessionTable._not_older(table, batch))  # type: ignore[arg-type]
    assert [(e.key, e.value and e.value["seq"]) for e in kept] == [
        (b"u1", 6), (b"u2", 1), (b"u2", None)]
    assert table.stale_skipped == 2


def test_unknown_setting_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean STREAMREC_KAFKA_SECURITY_PROTOCOL"):
        unknown_variables({"STREAMREC_KAFKA_SECURITY_PROTOCL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="unknown setting STREAMREC_NOPE"):
        unknown_variables({"STREAMREC_NOPE": "1"})
    unknown_variables({"STREAMREC_KAFKA_PORT": "9092", "STREAMREC_TOP_N": "5", "OTHER": "x"})


def test_unknown_setting_stops_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_REDIS_UR", "redis://x")
    with pytest.raises(ConfigError, match="STREAMREC_REDIS_URL"):
        Settings()


def test_kafka_security_arguments(tmp_path: Path) -> None:
    plain = client_kwargs(Settings())
    assert plain["security_protocol"] == "PLAINTEXT" and "sasl_plain_password" not in plain
    assert faust_credentials(Settings()) is None
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="svc", kafka_sasl_password="s3cret")  # type: ignore[arg-type]
    kw = client_kwargs(s)
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"],
            kw["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "svc", "s3cret")
    assert kw["ssl_context"] is not None
    creds = faust_credentials(s)
    assert creds is not None and creds.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(s) and "s3cret" not in repr(creds)  # secrets never reach logs
    assert client_kwargs("host:1") == {"bootstrap_servers": "host:1"}


def test_incomplete_security_settings_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs STREAMREC_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="go together"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="does not exist"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="use SSL or SASL_SSL"):
        Settings(kafka_ssl_cafile=tmp_path / "ca.pem")
