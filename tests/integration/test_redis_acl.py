"""The worker with a least-privilege Redis ACL user, and a clear error for bad credentials."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from serving.bundle import load_bundle
from serving.keys import experiment_key
from serving.list_types import Provenance, Ranked
from serving.reader import RecsReader
from serving.redis_store import RecsWriter
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration

# What a worker needs: its key prefix, and these commands (docs/operations.md, "Redis").
WORKER_COMMANDS = ["+ping", "+evalsha", "+script|load", "+hset", "+hmget", "+hincrby",
                   "+hincrbyfloat", "+pexpire",
                   "+sadd", "+set", "+get", "+incr", "+incrby", "+hgetall", "+zincrby",
                   "+zunionstore", "+zcard", "+zremrangebyrank", "+zrevrange"]
# Before trending existed (an operator who has not updated the ACL): lists must still flow.
WITHOUT_TRENDING = [c for c in WORKER_COMMANDS
                    if not c.startswith("+z") and c not in ("+get", "+hincrbyfloat")]


@pytest.fixture(params=["documented", "without-trending"])
def acl_user(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    admin = redis.Redis.from_url(Settings().redis_url.get_secret_value())
    name, password, prefix = f"sr-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, f"acl:{uuid.uuid4().hex[:8]}:"
    commands = WORKER_COMMANDS if request.param == "documented" else WITHOUT_TRENDING
    admin.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}*"],
                      commands=commands)
    yield name, password, prefix
    admin.acl_deluser(name)
    keys = admin.keys(f"{prefix}*")
    if keys:
        admin.delete(*keys)


def test_worker_runs_with_a_prefix_restricted_acl_user(
        acl_user: tuple[str, str, str], make_settings: Callable[..., Settings],
        start_worker: Callable[[Settings, Path], WorkerProc], tiny_bundle_dir: Path) -> None:
    name, password, prefix = acl_user
    s = make_settings(key_prefix=prefix, redis_url=f"redis://{name}:{password}@127.0.0.1:6379/0")
    restricted = redis.Redis.from_url(s.redis_url.get_secret_value())
    with pytest.raises(redis.exceptions.NoPermissionError):
        restricted.get("someone-elses-key")  # the user really is confined to its prefix
    item = load_bundle(tiny_bundle_dir).vocab.ids[0]
    w = start_worker(s, tiny_bundle_dir)
    events = [(f"a{u}".encode(), encode_event(ClickEvent(f"e{u}", f"a{u}", item, 1))) for u in range(20)]
    asyncio.run(send_raw(s, s.clicks_topic, events))
    st = w.wait_events(20)
    assert int(st["applied"]) == 20
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    assert all(reader.get_recommendations(f"a{u}") is not None for u in range(20))


def test_wrong_redis_password_is_a_clear_error_at_start(
        make_settings: Callable[..., Settings], tiny_bundle_dir: Path,
        acl_user: tuple[str, str, str]) -> None:
    name, _, prefix = acl_user
    s = make_settings(key_prefix=prefix, redis_url=f"redis://{name}:wrong@127.0.0.1:6379/0")
    env = {**os.environ, **s.to_env(), "STREAMREC_BUNDLE_PATH": str(tiny_bundle_dir)}
    done = subprocess.run(check=False, args=[sys.executable, "-m", "cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "refused the worker" in done.stderr and "wrong" not in done.stderr  # no secret echoed


def test_the_documented_acl_user_counts_experiments() -> None:
    """An experiment's counts are float sums (HINCRBYFLOAT inside the count-once script):
    the documented command list must allow them, or every arm's report stays empty."""
    admin = redis.Redis.from_url(Settings().redis_url.get_secret_value())
    name, password, prefix = f"sr-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, f"acl:{uuid.uuid4().hex[:8]}:"
    admin.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=[f"{prefix}*"],
                      commands=WORKER_COMMANDS)

    async def write() -> list[bool]:
        client = aioredis.Redis.from_url(f"redis://{name}:{password}@127.0.0.1:6379/0")
        try:
            writer = RecsWriter(client, prefix, ttl_s=60)
            await writer.load_scripts()
            return await writer.write(
                [(Provenance("u1", 1, "e1", 1), Ranked(["i1", "i2"], [0.9, 0.8], "model"))],
                "v1", epoch=1, generated_at_ms=1, worker_id="w1", counters={"applied": 1},
                status={}, batch_id="b1", arms=["control"],
                experiments={"exp1": {"control:clicks": 1, "control:ndcg@10": 0.5}})
        finally:
            await client.aclose()

    try:
        assert asyncio.run(write()) == [True]
        counts = admin.hgetall(experiment_key(prefix, "exp1"))
        assert {k.decode(): float(v) for k, v in counts.items()} == {
            "control:clicks": 1.0, "control:ndcg@10": 0.5}
    finally:
        admin.acl_deluser(name)
        keys = admin.keys(f"{prefix}*")
        if keys:
            admin.delete(*keys)
