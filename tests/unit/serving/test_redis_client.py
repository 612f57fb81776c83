"""Unit tests of the pure parts of :mod:`serving.redis_client` and :func:`serving.keys.meta_prefix`:
which lists share a script call, hash slots and tags, and which Redis errors are transient."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from serving.keys import batch_token_key, epoch_key, meta_prefix, recs_key, worker_key
from serving.redis_client import cluster_slot, group_by_slot
from serving.trending import landmark_key, trending_key
from streams.retry import is_transient


def test_one_redis_takes_consecutive_runs_in_order() -> None:
    keys = [f"k{i}" for i in range(10)]
    assert group_by_slot(keys, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert group_by_slot(keys, 64) == [list(range(10))]
    assert group_by_slot([], 4) == []


def test_a_cluster_call_holds_keys_of_one_slot_at_most_per_call() -> None:
    keys = ["a1", "b1", "a2", "c1", "a3", "b2", "a4"]
    calls = group_by_slot(keys, 3, slot=lambda k: k[0])
    # by slot in order of first appearance, in order within it, chunked
    assert calls == [[0, 2, 4], [6], [1, 5], [3]]
    assert sorted(at for c in calls for at in c) == list(range(len(keys)))


def test_groups_of_real_keys_never_span_slots() -> None:
    keys = [recs_key("streamrec:", f"u{i}") for i in range(5000)] + [recs_key("p:", "{t}x"),
                                                                     recs_key("p:", "{t}y")]
    calls = group_by_slot(keys, 64, cluster_slot)
    assert sorted(at for c in calls for at in c) == list(range(len(keys)))
    for call in calls:
        assert 1 <= len(call) <= 64
        assert len({cluster_slot(keys[at]) for at in call}) == 1
    # users are not hash-tagged into one slot: their lists spread over the cluster
    assert len({cluster_slot(k) for k in keys}) > 3000
    # a user id's own braces are a hash tag: both lists share a slot (and a call)
    assert any({len(keys) - 2, len(keys) - 1} <= set(c) for c in calls)


def test_per_call_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_call"):
        group_by_slot(["a"], 0)


def test_cluster_slots_are_redis_clusters() -> None:
    # values from CLUSTER KEYSLOT
    assert cluster_slot("foo") == 12182
    assert cluster_slot("{user1000}.following") == cluster_slot("{user1000}.followers") == 3443
    assert 0 <= cluster_slot("") < 16384


def test_the_meta_prefix_is_the_prefix_on_one_redis_and_a_hash_tag_on_a_cluster() -> None:
    assert meta_prefix("streamrec:", False) == "streamrec:"
    assert meta_prefix("", False) == ""
    assert meta_prefix("streamrec:", True) == "{streamrec:}"
    assert meta_prefix("", True) == "{streamrec}"  # "{}" would be no tag at all
    # every key a script counts once with lies in one slot; the lists keep their names
    meta = meta_prefix("streamrec:", True)
    together = [worker_key(meta, "w1"), batch_token_key(meta, "w1", "b:9"), trending_key(meta),
                landmark_key(meta), batch_token_key(meta, "w2", "b:1:trending"), epoch_key(meta)]
    assert len({cluster_slot(k) for k in together}) == 1
    assert recs_key("streamrec:", "u1") == "streamrec:recs:u1"


@pytest.mark.parametrize("error", [
    ClusterDownError("CLUSTERDOWN The cluster is down"), MasterDownError("MASTERDOWN"),
    TryAgainError("TRYAGAIN"), MovedError("3999 127.0.0.1:6381"), SlotNotCoveredError("slot 9"),
    RedisConnectionError("refused"),
])
def test_cluster_failover_errors_are_transient(error: Exception) -> None:
    assert is_transient(error)


def test_an_unreachable_cluster_is_transient_a_refusing_one_is_not() -> None:
    def raised(cause: Exception) -> RedisClusterException:
        try:
            raise RedisClusterException("Redis Cluster cannot be connected") from cause
        except RedisClusterException as e:
            return e

    assert is_transient(raised(RedisConnectionError("refused")))
    assert not is_transient(raised(AuthenticationError("WRONGPASS")))
    assert not is_transient(RedisClusterException("EVALSHA - all keys must map to the same key slot"))
    assert not is_transient(ResponseError("CROSSSLOT Keys in request don't hash to the same slot"))


def test_a_cluster_url_names_a_node_of_database_0() -> None:
    from streamrec.errors import ConfigError
    from streamrec.settings import Settings

    ok = Settings(redis_cluster=True, redis_url="redis://10.0.0.5:7000")  # type: ignore[arg-type]
    assert ok.redis_cluster and Settings(redis_url="redis://h:6379/3").redis_cluster is False  # type: ignore[arg-type]
    for url in ("redis://10.0.0.5:7000/3", "redis://10.0.0.5:7000?db=1", "redis://u:80/42#x@h:7000/3"):
        with pytest.raises(ConfigError, match="only database 0, and STREAMREC_REDIS_URL names another") as info:
            Settings(redis_cluster=True, redis_url=url)  # type: ignore[arg-type]
        assert "42" not in str(info.value)  # a piece of an unencoded password is never quoted
    for url in ("redis://10.0.0.5:7000/0", "redis://10.0.0.5:7000/00", "redis://10.0.0.5:7000?db=0"):
        assert Settings(redis_cluster=True, redis_url=url).redis_cluster  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unix socket"):
        Settings(redis_cluster=True, redis_url="unix:///tmp/redis.sock")  # type: ignore[arg-type]
