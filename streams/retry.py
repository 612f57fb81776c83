"""Retrying Redis operations through outages, and status reports that never block.

No Redis outage may end a worker (contract 4): every Redis call on the worker
either retries until Redis is back (list writes, the fencing epoch) or is
best-effort and coalesced in the background (status fields).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that go away by themselves: Redis down, restarting, loading its data, or slow.
# An authentication or permission error does not (redis-py's AuthenticationError is a
# ConnectionError, so it is singled out): it is a configuration error.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, BusyLoadingError)
# Redis Cluster's, while a failover or a slot migration is under way: CLUSTERDOWN (and
# MASTERDOWN), TRYAGAIN, MOVED/ASK left after the client's own redirections, a slot no
# node covers yet, redirections beyond the client's limit (ClusterError).
CLUSTER_TRANSIENT = (ClusterError, TryAgainError, AskError, SlotNotCoveredError)

# Transient failures retried so far in this process, by ``what`` (exported as
# ``streamrec_redis_retries_total{operation}`` by streams.prometheus). The worker's
# operations are listed so that each is exported, at 0, before its first retry.
OPERATIONS = ("list write", "fencing epoch", "status report")
RETRIES: collections.Counter[str] = collections.Counter({op: 0 for op in OPERATIONS})


def is_transient(e: BaseException) -> bool:
    from redis.exceptions import AuthenticationError

    if isinstance(e, CLUSTER_TRANSIENT):
        return True
    if isinstance(e, RedisClusterException) and e.__cause__ is not None:
        # no seed node answered when the client (re)loaded the cluster's slots
        return is_transient(e.__cause__)
    return isinstance(e, TRANSIENT) and not isinstance(e, AuthenticationError)


async def retry_transient(op: Callable[[], Awaitable[T]], first_delay: float = 0.05,
                          max_delay: float = 5.0, what: str = "redis") -> T:
    """Run ``op`` until it succeeds, backing off on transient Redis errors.

    Other errors (a bug, a permission error) propagate at once. Each retry is
    counted in ``RETRIES[what]``.
    """
    delay = first_delay
    failures = 0
    while True:
        try:
            result = await op()
        except Exception as e:
            if not is_transient(e):
                raise
            failures += 1
            RETRIES[what] += 1
            # one line per back-off step, not per retry once the delay is at its cap
            if delay < max_delay or failures % 10 == 1:
                log.warning("%s: redis unavailable (%s); retrying in %.2fs", what, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            if failures:
                log.warning("%s: redis is back after %d failed attempts", what, failures)
            return result


class StatusReporter:
    """Writes status fields in the background, coalescing them while Redis is away.

    ``report`` never blocks and never raises: the fields are merged into a
    pending set that one task writes, retrying through outages. Status is
    informational; a worker must not stop, or wait, because it cannot write it.
    """

    def __init__(self, write: Callable[[Mapping[str, str | int | float]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: dict[str, str | int | float] = {}
        self._task: asyncio.Task[None] | None = None

    def report(self, fields: Mapping[str, str | int | float]) -> None:
        self._pending.update(fields)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            fields, self._pending = self._pending, {}
            try:
                await retry_transient(lambda fields=fields: self._write(fields),  # type: ignore[misc]
                                      what="status report")
            except Exception as e:  # noqa: BLE001 - informational: log, never crash the caller
                log.error("could not write worker status: %s", e)

    async def wait(self) -> None:
        """Wait until what was reported so far is written (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
