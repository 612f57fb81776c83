"""Readiness (streams.web.readiness): what keeps a worker from serving, named."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

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
