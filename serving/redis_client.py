"""Redis clients, built in one place: one Redis, or a Redis Cluster (``STREAMREC_REDIS_CLUSTER``).

On a cluster, ``STREAMREC_REDIS_URL`` names any node (a seed): the client asks it for
the cluster's slots and nodes, sends each command to the node that owns its key's
slot, and follows ``MOVED``/``ASK`` redirections. After a failover (a master down,
its replica promoted) it retries with backoff and reloads the slots
(:data:`CLUSTER_RETRY`); errors that outlast those retries are transient ones for
the worker (``streams.retry``), which goes on retrying.

The lists, their keys and fields are the same on both: readers see one layout. Keys
other than the lists carry a hash tag on a cluster (``serving.keys.meta_prefix``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

SyncClient = redis.Redis | RedisCluster
AsyncClient = aioredis.Redis | AsyncRedisCluster

# Attempts of each cluster command (and each cluster pipeline) on a connection error,
# a timeout, CLUSTERDOWN, TRYAGAIN or a slot not covered, reloading the slots between
# tries: ~10 ms, then doubling (with jitter) up to 1 s. A failover takes about
# cluster-node-timeout plus an election; the worker's own retries cover the rest.
CLUSTER_RETRIES = 10


def _cluster_retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), retries=CLUSTER_RETRIES)


def sync_client(url: str, cluster: bool = False, **kwargs: Any) -> SyncClient:
    """A blocking client for ``url`` (a seed node when ``cluster``); ``kwargs`` go to redis-py
    (``decode_responses``, ``socket_timeout``, …)."""
    if cluster:
        return RedisCluster.from_url(url, retry=_cluster_retry(), **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def async_client(url: str, cluster: bool = False, max_connections: int | None = None,
                 **kwargs: Any) -> AsyncClient:
    """An asyncio client for ``url`` (a seed node when ``cluster``).

    ``max_connections``: on one Redis, at most this many connections, and a command
    beyond them waits up to 2 s for one to be free; unset, connections are opened as
    needed. A cluster client has no waiting pool (redis-py fails a command beyond its
    limit at once), so it keeps redis-py's limit, 100 connections per node."""
    if cluster:
        return AsyncRedisCluster.from_url(url, retry=_cluster_retry(), **kwargs)
    if max_connections is not None:
        return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=2, **kwargs))
    return aioredis.Redis.from_url(url, **kwargs)


T = TypeVar("T")


def group_by_slot(keys: Sequence[str], per_call: int,
                  slot: Callable[[str], T] | None = None) -> list[list[int]]:
    """Indices of ``keys`` in calls of at most ``per_call`` keys, for scripts over them.

    ``slot`` None (one Redis): consecutive runs, in order. Otherwise each call's keys
    share ``slot(key)`` (a cluster runs a script only over one hash slot): calls in the
    order their slot first appears, keys in their order within it.
    """
    if per_call < 1:
        raise ValueError(f"per_call must be at least 1, got {per_call}")
    if slot is None:
        return [list(range(lo, min(lo + per_call, len(keys))))
                for lo in range(0, len(keys), per_call)]
    groups: dict[T, list[int]] = {}
    for at, key in enumerate(keys):
        groups.setdefault(slot(key), []).append(at)
    return [g[lo:lo + per_call] for g in groups.values() for lo in range(0, len(g), per_call)]


def cluster_slot(key: str) -> int:
    """The hash slot of ``key`` (0..16383), as Redis Cluster computes it (hash tags included)."""
    return int(key_slot(key.encode()))
