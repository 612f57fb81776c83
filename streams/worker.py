"""The async shell around one micro-batch: state, compute off the loop, one Redis pipeline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import numpy as np

from serving.latency import bucket_counts
from serving.recommend import recommend
from serving.store import RecsWriter
from streams.batch import BatchRules, Record, apply_batch
from streams.model import ModelHolder
from streams.session import Session

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClickWorker:
    """Handles the batches of one agent. Not shared between agents."""

    def __init__(
        self,
        *,
        table: MutableMapping[bytes, Session],
        dlq: Any,  # faust TopicT: ``await dlq.send(key=…, value=…)``
        model: ModelHolder,
        writer: RecsWriter,
        executor: Executor,
        rules: BatchRules,
        top_n: int,
        worker_id: str,
    ) -> None:
        self.table, self.dlq, self.model, self.writer = table, dlq, model, writer
        self.executor, self.rules, self.top_n, self.worker_id = executor, rules, top_n, worker_id

    async def handle(self, events: Sequence[Any]) -> None:
        """Process one batch of Faust events; they are acked when this returns.

        Faust acks a ``take_events`` batch even when its handler raises, so a
        transient Redis failure must not escape: the Redis step is retried with
        backoff until it succeeds (the batch's state is already in the table).
        """
        records = [Record(e.message.key, e.value, e.message.topic, e.message.partition,
                          e.message.offset) for e in events]
        out = apply_batch(self.table, records, self.rules)
        for d in out.dead:
            log.warning("dead-letter %s[%d]@%d: %s", d.record.topic, d.record.partition,
                        d.record.offset, d.reason)
            await self.dlq.send(key=d.record.key, value=d.encode(self.worker_id))
        bundle = self.model.current  # one version for the whole batch
        users = list(out.touched)
        ranked = []
        if users:
            histories = [out.histories[u] for u in users]
            ranked = await asyncio.get_running_loop().run_in_executor(
                self.executor, recommend, bundle, histories, self.top_n)
        now_ms = int(time.time() * 1000)
        await retry_transient(lambda: self.writer.write(
            [(out.touched[u], r) for u, r in zip(users, ranked, strict=True)],
            model_version=bundle.version,
            generated_at_ms=now_ms,
            worker_id=self.worker_id,
            counters={
                "events": len(records),
                "applied": len(out.applied_ts),
                "duplicates": out.duplicates,
                "dead_lettered": len(out.dead),
                "lists_written": len(users),
                "batches": 1,
            },
            status={
                "model_version": bundle.version,
                "last_batch_at": now_ms,
                "last_batch_size": len(records),
            },
        ))
        if out.applied_ts:  # event time -> Redis write acknowledged, per applied event
            lags = int(time.time() * 1000) - np.asarray(out.applied_ts, dtype=np.int64)
            await retry_transient(lambda: self.writer.record_latency(
                self.worker_id, int(lags.sum()), bucket_counts(lags)))


async def retry_transient(op: Callable[[], Awaitable[T]], first_delay: float = 0.05,
                          max_delay: float = 5.0) -> T:
    """Run ``op`` until it succeeds, backing off on Redis connection errors and timeouts."""
    delay = first_delay
    while True:
        try:
            return await op()
        except (RedisConnectionError, RedisTimeoutError) as e:
            log.warning("redis unavailable (%s); retrying in %.2fs", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
