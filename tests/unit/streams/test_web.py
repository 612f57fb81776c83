"""Readiness (streams.web.readiness): what keeps a worker from serving, named."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams.web import readiness


def _ctx(items_read: bool) -> Any:
    ready = asyncio.Event()
    if items_read:
        ready.set()
    return SimpleNamespace(holder=SimpleNamespace(loaded=True), rebalanced=True,
                           items=SimpleNamespace(ready=ready))


APP: Any = SimpleNamespace(in_recovery=False, rebalancing=False)


def test_a_worker_still_reading_the_items_topic_is_not_ready() -> None:
    assert readiness(APP, _ctx(items_read=False)) == ["reading the items topic (the live catalogue)"]
    assert readiness(APP, _ctx(items_read=True)) == []


def test_a_busy_read_pool_is_told_apart_from_redis_being_down() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MaxConnectionsError
    from redis.exceptions import TimeoutError as RedisTimeout

    from streams.web import redis_refusal

    waited = RedisConnectionError("No connection available.")  # the blocking pool's wait ran out
    waited.__cause__ = TimeoutError()
    for busy in (waited, MaxConnectionsError("Too many connections")):
        message, headers = redis_refusal(busy)
        assert "busy" in message and headers == {"Retry-After": "1"}
    for down in (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379."), RedisTimeout("Timeout reading")):
        message, headers = redis_refusal(down)
        assert message.startswith("Redis unavailable") and headers is None


def test_a_request_aiohttp_cannot_parse_is_one_line_without_its_headers(
        caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp logs such a request with a traceback quoting its headers (a token too)."""
    import logging
    import sys

    from aiohttp.http_exceptions import LineTooLong

    from streams.web import BadRequestLog

    f = BadRequestLog(interval_s=60)
    try:
        raise LineTooLong(b"Authorization: Bearer secret-token-123", "8190")
    except LineTooLong:
        parse_error = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "Error handling request",
                                        None, sys.exc_info())
    other = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "something else", None, None)
    with caplog.at_level(logging.WARNING, logger="streamrec.web"):
        assert f.filter(parse_error) is False and f.filter(parse_error) is False
        assert f.filter(other) is True
    lines = [r.getMessage() for r in caplog.records if r.name == "streamrec.web"]
    assert lines == ["refused a malformed HTTP request: LineTooLong (HTTP 400)"]  # the second within the interval
    assert "secret" not in caplog.text
