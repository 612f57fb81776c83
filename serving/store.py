"""Writing recommendation lists to Redis (async, one pipeline per batch).

Each list is a hash at ``{prefix}recs:{user_id}``. A Lua script makes every
write conditional: a list is only replaced by one computed from the same or a
later event of that user, so a slow or replayed batch can never overwrite a
fresher answer. "Later" is ordered by (event time, seq): event time first, so
lists from a session rebuilt from scratch (state lost, ``seq`` restarted) still
replace ones from before; ``seq`` (events applied to the session) breaks ties
between events of the same millisecond.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from serving.keys import recs_key, worker_key, workers_set
from serving.recommend import Ranked

# KEYS[1] = recs key; ARGV = seq, items, scores, source, model_version, generated_at,
# last_event_id, last_event_ts, ttl_ms. Returns 1 if written, 0 if a later list is stored.
_WRITE_IF_NEWER = """
local cur = redis.call('HMGET', KEYS[1], 'last_event_ts', 'seq')
if cur[1] then
  local ts, new_ts = tonumber(cur[1]), tonumber(ARGV[8])
  if ts > new_ts or (ts == new_ts and tonumber(cur[2]) > tonumber(ARGV[1])) then return 0 end
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'items', ARGV[2], 'scores', ARGV[3],
  'source', ARGV[4], 'model_version', ARGV[5], 'generated_at', ARGV[6],
  'last_event_id', ARGV[7], 'last_event_ts', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return 1
"""


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a stored list reflects: the user's session after event ``seq``."""

    user_id: str
    seq: int
    last_event_id: str
    last_event_ts: int


class RecsWriter:
    """Writes a batch of lists plus the worker's counters in one round trip."""

    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_s * 1000
        self._sha = hashlib.sha1(_WRITE_IF_NEWER.encode()).hexdigest()

    async def write(
        self,
        lists: Sequence[tuple[Provenance, Ranked]],
        model_version: str,
        generated_at_ms: int,
        worker_id: str,
        counters: Mapping[str, int],
        status: Mapping[str, str | int | float],
    ) -> int:
        """Store ``lists``; returns how many were written (the rest were older than stored)."""

        async def run(counters: Mapping[str, int], status: Mapping[str, str | int | float]) -> int:
            pipe = self.client.pipeline(transaction=False)
            # plain EVALSHA: redis-py's Script wrapper costs more per call than the script
            for p, r in lists:
                pipe.evalsha(self._sha, 1, recs_key(self.prefix, p.user_id), p.seq,
                             orjson.dumps(r.items), orjson.dumps(r.scores), r.source, model_version,
                             generated_at_ms, p.last_event_id, p.last_event_ts, self.ttl_ms)
            self._add_status(pipe, worker_id, counters, status)
            results = await pipe.execute()
            return sum(results[: len(lists)])

        try:
            return await run(counters, status)
        except NoScriptError:  # Redis restarted or flushed its script cache: load and retry once
            await self.client.script_load(_WRITE_IF_NEWER)
            # the counters and status of the failed pipeline were applied already
            return await run({}, {})

    def _add_status(self, pipe: Any, worker_id: str, counters: Mapping[str, int],
                    status: Mapping[str, str | int | float]) -> None:
        wkey = worker_key(self.prefix, worker_id)
        for name, delta in counters.items():
            if delta:
                pipe.hincrby(wkey, name, delta)
        if status:
            pipe.hset(wkey, mapping=dict(status))
        pipe.sadd(workers_set(self.prefix), worker_id)

    async def report_status(self, worker_id: str, status: Mapping[str, str | int | float]) -> None:
        """Set fields of the worker's status hash (served version, swap time, …)."""
        pipe = self.client.pipeline(transaction=False)
        self._add_status(pipe, worker_id, {}, status)
        await pipe.execute()

    async def record_latency(self, worker_id: str, lag_sum_ms: int, buckets: Mapping[str, int]) -> None:
        """Add a batch's latencies to the worker's histogram (``serving.latency``)."""
        pipe = self.client.pipeline(transaction=False)
        key = worker_key(self.prefix, worker_id)
        pipe.hincrby(key, "lag_ms_sum", lag_sum_ms)
        for name, n in buckets.items():
            pipe.hincrby(key, name, n)
        await pipe.execute()
