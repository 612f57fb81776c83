"""Writing recommendation lists to Redis (async, one pipeline per batch).

Each list is a hash at ``{prefix}recs:{user_id}``. A Lua script makes every
write conditional, so a slow, replayed or fenced-out batch can never overwrite
a list that reflects more of the user's applied events. Lists are ordered by
``(epoch, seq)``, never by event timestamps:

* ``epoch`` is the writer's fencing token (``streams.fencing``): a number every
  worker takes from one Redis counter each time it is assigned partitions. The
  current owner of a partition always holds a later epoch than any worker that
  owned it before (a paused or partitioned-away "zombie"), so the zombie's late
  writes lose. A fresh epoch also wins over lists left by an earlier life of
  the log (a session rebuilt from scratch restarts ``seq``).
* ``seq`` (events applied to the session) orders the writes of one owner, so an
  out-of-order event timestamp does not matter: the list always reflects the
  last *applied* event.

An equal ``(epoch, seq)`` is written again (a redelivered latest event
recomputes its list; the worker that first wrote it may have died first).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis
from redis.exceptions import (
    AuthenticationError,
    ClusterError,
    NoPermissionError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)

from serving.keys import (
    SCHEMA_VERSION,
    batch_token_key,
    epoch_key,
    experiment_key,
    meta_prefix,
    recs_key,
    worker_key,
    workers_set,
)
from serving.list_types import SOURCE_MODEL, Provenance, Ranked
from serving.online import DEFAULT_ARM
from serving.redis_client import AsyncClient, cluster_slot, group_by_slot, sync_client
from serving.rerank import REASON_SEQUENCE
from serving.trending import ADD_CLICKS, landmark_key, trending_key
from streamrec.errors import ConfigError
from streamrec.logs import RateLimitedLog
from streamrec.settings import Settings

log = logging.getLogger(__name__)

# KEYS = the batch's recs keys; ARGV = epoch, generated_at, ttl_ms, schema, then per key: seq,
# items, scores, source, last_event_id, last_event_ts, reasons, list_id, model_version, arm. Each
# list is written only if no later one is stored. Returns a flag per list, 1 where it was written.
# One call per LISTS_PER_CALL lists, not one per list: per-list EVALSHA commands cost the
# worker's event loop a command to pack and a reply to parse each (profiled at saturation: the
# write was 13.1% of the loop's samples per list, 5.6% per batch; docs/benchmarks.md, "Writing
# lists to Redis").
_WRITE_IF_NEWER = """
local new_epoch = tonumber(ARGV[1])
local written = {}
for i, key in ipairs(KEYS) do
  local a = 4 + (i - 1) * 10
  local cur = redis.call('HMGET', key, 'epoch', 'seq')
  local older = false
  if cur[2] then
    local epoch = tonumber(cur[1] or '0')
    older = epoch > new_epoch or (epoch == new_epoch and tonumber(cur[2]) > tonumber(ARGV[a + 1]))
  end
  if not older then
    redis.call('HSET', key, 'epoch', ARGV[1], 'seq', ARGV[a + 1], 'items', ARGV[a + 2],
      'scores', ARGV[a + 3], 'source', ARGV[a + 4], 'model_version', ARGV[a + 9],
      'generated_at', ARGV[2], 'last_event_id', ARGV[a + 5], 'last_event_ts', ARGV[a + 6],
      'schema', ARGV[4], 'reasons', ARGV[a + 7], 'list_id', ARGV[a + 8], 'arm', ARGV[a + 10])
    redis.call('PEXPIRE', key, ARGV[3])
  end
  written[i] = older and 0 or 1
end
return written
"""

# KEYS[1] = worker status hash, KEYS[2] = the batch's token; ARGV = token ttl ms, then
# (counter, delta) pairs. A retried pipeline (the first try may have been applied before
# the connection broke) finds the token and adds nothing: counters count each batch once.
_COUNT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""
# The same for an experiment's counts (sums of ranks and gains are not integers).
_COUNT_ONCE_FLOAT = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  for i = 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""
_TOKEN_TTL_MS = 3_600_000
# Lists per script call. Redis runs nothing else while a script runs: 256 lists took
# ~3 ms in one call here (INFO commandstats), 64 take under 1 ms (docs/benchmarks.md).
# On Redis Cluster a call holds the lists of one hash slot (up to this many).
LISTS_PER_CALL = 64


class RecsWriter:
    """Writes a batch of lists plus the worker's counters in one round trip (one per node
    that holds some of them, in parallel, on Redis Cluster).

    ``cluster``: the client is a cluster's. Each script call then holds lists of one hash
    slot, and the keys that are not lists carry the prefix as a hash tag
    (``serving.keys.meta_prefix``)."""

    def __init__(self, client: AsyncClient, prefix: str, ttl_s: int,
                 status_ttl_s: int | None = None, trending_half_life_s: float = 3600.0,
                 trending_max_items: int = 10_000, cluster: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self.meta = meta_prefix(prefix, cluster)  # status, tokens, trending, experiments
        self._slot = cluster_slot if cluster else None
        self.ttl_ms = ttl_s * 1000
        self.trending_half_life_ms = int(trending_half_life_s * 1000)
        self.trending_max_items = trending_max_items
        self._trend_sha = _sha1(ADD_CLICKS)
        # e.g. an ACL user without the sorted-set commands (docs/operations.md, "Redis")
        self._trend_log = RateLimitedLog(interval_s=60.0, what="trending not updated:", logger=log)
        # every status write renews the worker's hash; a dead worker's expires
        self.status_ttl_ms = status_ttl_s * 1000 if status_ttl_s else None
        self._write_sha = _sha1(_WRITE_IF_NEWER)
        self._count_sha = _sha1(_COUNT_ONCE)
        self._count_float_sha = _sha1(_COUNT_ONCE_FLOAT)

    async def write(
        self,
        lists: Sequence[tuple[Provenance, Ranked]],
        model_version: str | Sequence[str],
        epoch: int,
        generated_at_ms: int,
        worker_id: str,
        counters: Mapping[str, int],
        status: Mapping[str, str | int | float],
        batch_id: str | None = None,
        clicked: Mapping[str, int] | None = None,
        list_ids: Sequence[str] | None = None,
        arms: Sequence[str] | None = None,
        experiments: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[bool]:
        """Store ``lists``; returns, for each, whether it was written (False: the stored list
        reflects more of the user's events, or a later fencing epoch).
        ``model_version``: the batch's, or one per list; ``clicked``: the batch's applied
        clicks per item, added to trending; ``list_ids``: one per list, stored with it
        (default: none, an empty field); ``arms``: one per list (default: the arm of no
        experiment); ``experiments``: per experiment, the sums to add to its counts.

        Safe to retry after any failure: list writes are conditional and, given a
        ``batch_id`` unique to the batch, its counters and clicks are added once.
        """
        pipe = self.client.pipeline(transaction=False)
        # plain EVALSHA: redis-py's Script wrapper costs more per call than the script (and
        # a cluster pipeline refuses pipe.evalsha; execute_command is what it calls anyway)
        evalsha = pipe.execute_command
        # a script holds Redis while it runs: chunks bound what other clients wait for
        ids = list(list_ids) if list_ids is not None else [""] * len(lists)
        versions = [model_version] * len(lists) if isinstance(model_version, str) else model_version
        arm_of = arms if arms is not None else [DEFAULT_ARM] * len(lists)
        keys = [recs_key(self.prefix, p.user_id) for p, _ in lists]
        chunks = group_by_slot(keys, LISTS_PER_CALL, self._slot)
        for chunk in chunks:
            args: list[Any] = [epoch, generated_at_ms, self.ttl_ms, SCHEMA_VERSION]
            for at in chunk:
                p, r = lists[at]
                args += (p.seq, orjson.dumps(r.items), orjson.dumps(r.scores), r.source,
                         p.last_event_id, p.last_event_ts,
                         orjson.dumps(r.reasons or _default_reasons(r)), ids[at], versions[at],
                         arm_of[at])
            evalsha("EVALSHA", self._write_sha, len(chunk), *[keys[at] for at in chunk], *args)
        deltas = [x for name, d in counters.items() if d for x in (name, d)]
        if deltas and batch_id is not None:
            evalsha("EVALSHA", self._count_sha, 2, worker_key(self.meta, worker_id),
                    batch_token_key(self.meta, worker_id, batch_id), _TOKEN_TTL_MS, *deltas)
        elif deltas:
            self._add_counters(pipe, worker_id, counters)
        counted = experiments if experiments and batch_id is not None else {}
        for name, sums in counted.items():
            pairs = [x for field, v in sums.items() if v for x in (field, repr(float(v)))]
            if pairs:
                evalsha("EVALSHA", self._count_float_sha, 2, experiment_key(self.meta, name),
                        batch_token_key(self.meta, worker_id, f"{batch_id}:x:{name}"),
                        _TOKEN_TTL_MS, *pairs)
        trend_at = None
        if clicked and batch_id is not None:
            trend_at = len(pipe)
            evalsha("EVALSHA", self._trend_sha, 3, trending_key(self.meta), landmark_key(self.meta),
                    batch_token_key(self.meta, worker_id, batch_id + ":trending"),
                    generated_at_ms, self.trending_half_life_ms, self.trending_max_items,
                    _TOKEN_TTL_MS, *[x for pair in clicked.items() for x in pair])
        self._add_status(pipe, worker_id, status)
        results = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in results):
            # Redis restarted or flushed its script cache: load, run again (conditional
            # writes and batch tokens make the repeat harmless)
            await self.load_scripts()
            return await self.write(lists, model_version, epoch, generated_at_ms, worker_id,
                                    counters if batch_id is not None else {}, status, batch_id,
                                    clicked if batch_id is not None else None, list_ids,
                                    arms, experiments if batch_id is not None else None)
        for at, r in enumerate(results):
            if isinstance(r, Exception):
                if at == trend_at:  # trending is best effort: the lists are written
                    self._trend_log.add(f"{type(r).__name__}: {r}")
                    continue
                raise r
        if self._slot is None:  # one call per consecutive run: flags in order
            return [bool(flag) for r in results[:len(chunks)] for flag in r]
        written = [False] * len(lists)
        for chunk, flags in zip(chunks, results, strict=False):
            for at, flag in zip(chunk, flags, strict=True):
                written[at] = bool(flag)
        return written

    async def load_scripts(self) -> None:
        await self.client.script_load(_WRITE_IF_NEWER)
        await self.client.script_load(_COUNT_ONCE)
        await self.client.script_load(_COUNT_ONCE_FLOAT)
        await self.client.script_load(ADD_CLICKS)

    def _add_counters(self, pipe: Any, worker_id: str, counters: Mapping[str, int]) -> None:
        wkey = worker_key(self.meta, worker_id)
        for name, delta in counters.items():
            if delta:
                pipe.hincrby(wkey, name, delta)

    def _add_status(self, pipe: Any, worker_id: str, status: Mapping[str, str | int | float]) -> None:
        key = worker_key(self.meta, worker_id)
        if status:
            pipe.hset(key, mapping=dict(status))
        if self.status_ttl_ms:
            pipe.pexpire(key, self.status_ttl_ms)
        pipe.sadd(workers_set(self.meta), worker_id)

    async def report_status(self, worker_id: str, status: Mapping[str, str | int | float]) -> None:
        """Set fields of the worker's status hash (served version, swap time, …)."""
        pipe = self.client.pipeline(transaction=False)
        self._add_status(pipe, worker_id, status)
        await pipe.execute()


def _default_reasons(r: Ranked) -> list[str]:
    reason = {SOURCE_MODEL: REASON_SEQUENCE}.get(r.source, r.source)
    return [reason] * len(r.items)


def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def cluster_refusal(e: redis.RedisClusterException) -> str | None:
    """Why no seed node gave a cluster client the slots, where it is a refusal that will not
    fix itself: ``"credentials"`` (the password or the ACL), ``"not_cluster"`` (the node is
    not in cluster mode), or None (unreachable: it may come back). redis-py wraps the
    node's own error, so it is read from the cause and the message."""
    if isinstance(e.__cause__, (AuthenticationError, NoPermissionError)) or any(
            x in str(e) for x in ("NOAUTH", "WRONGPASS", "NOPERM", "invalid username-password")):
        return "credentials"
    if "not enabled" in str(e):
        return "not_cluster"
    return None


def check_redis(settings: Settings, timeout_s: float = 2.0) -> None:
    """Fail at start on a Redis that refuses us; go on (and wait later) if it is only down.

    A wrong password or an ACL user without the commands the worker needs will not
    fix itself: restarting would only loop. An unreachable Redis may come back, and
    the worker waits for it (``streams.retry``).
    """
    url = settings.redis_url.get_secret_value()
    where = settings.redis_host
    try:
        client = sync_client(url, settings.redis_cluster, socket_connect_timeout=timeout_s,
                             socket_timeout=timeout_s)
    except redis.RedisClusterException as e:  # no seed node told the client the cluster's slots
        if cluster_refusal(e) is not None:
            raise ConfigError(f"Redis Cluster at {where} refused the worker ({e}); check "
                              "STREAMREC_REDIS_URL's user, password and ACL, and that it names "
                              "a cluster node") from None
        log.warning("Redis Cluster at %s is not reachable at start (%s); the worker starts and "
                    "waits for it before writing lists", where, e)
        return
    try:
        client.ping()
        # the fencing epoch: needs INCRBY on the prefix
        client.incrby(epoch_key(meta_prefix(settings.key_prefix, settings.redis_cluster)), 0)
    except (AuthenticationError, NoPermissionError) as e:
        raise ConfigError(f"Redis at {where} refused the worker ({type(e).__name__}: {e}); "
                          "check STREAMREC_REDIS_URL's user, password and ACL") from None
    except (redis.ConnectionError, ClusterError, TryAgainError, redis.RedisClusterException) as e:
        log.warning("Redis at %s is not reachable at start (%s); the worker starts and waits "
                    "for it before writing lists", where, e)
    except ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e) or "NOPERM" in str(e):
            raise ConfigError(f"Redis at {where} refused the worker: {e}; check "
                              "STREAMREC_REDIS_URL's user, password and ACL") from None
        raise
    finally:
        client.close()
