"""Fencing tokens: a paused or partitioned-away worker never overwrites newer lists.

Kafka fences a zombie producer only with transactions, which not every
Kafka-protocol broker supports (Tansu's memory storage refuses
InitProducerId). This guard holds on any broker: every time a worker is
assigned partitions it takes the next number of one Redis counter, its
*epoch*, and every list it writes carries the epoch that was current when the
batch was applied to state. The store keeps a list only against ones of a
lower ``(epoch, seq)`` (``serving.redis_store``). The worker that owns a partition
now was assigned it after every earlier owner was, so its epoch is higher, and
a zombie's late writes lose against anything the owner wrote.

The session changelog is guarded separately: changelog records are ordered by
``seq`` when they are applied (``streams.tables``), so a zombie's late
changelog record cannot roll a session back either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from streams.retry import retry_transient

log = logging.getLogger(__name__)


class Fencing:
    """This worker's current epoch; a new one after each assignment.

    ``incr`` takes the next epoch (``INCR {prefix}epoch``). While an assignment's
    epoch is being taken (Redis may be down), ``current`` waits: no batch is
    applied under a stale epoch after a new assignment.
    """

    def __init__(self, incr: Callable[[], Awaitable[int]]) -> None:
        self._incr = incr
        self._epoch = 0
        self._generation = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def on_assigned(self) -> None:
        """Start taking the epoch of a new assignment (never blocks the rebalance)."""
        self._generation += 1
        self._ready.clear()
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._take(self._generation))

    async def _take(self, generation: int) -> None:
        epoch = await retry_transient(self._incr, what="fencing epoch")
        if generation == self._generation:  # a later assignment supersedes this one
            self._epoch = epoch
            self._ready.set()
            log.info("fencing epoch %d", epoch)

    async def current(self) -> int:
        await self._ready.wait()
        return self._epoch

    @property
    def epoch(self) -> int:
        return self._epoch
