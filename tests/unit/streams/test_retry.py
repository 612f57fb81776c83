"""Unit tests of :mod:`streams.retry`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.retry import StatusReporter, retry_transient


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

