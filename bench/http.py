"""The HTTP read API under load: ``GET /recs/{user_id}`` at a fixed offered rate.

A worker serves a Beauty-sized random bundle; clicks give ``users`` users a
list first. Then requests are sent open-loop (each at its scheduled time,
whatever the previous ones did, so a slow answer cannot hide the ones queued
behind it) for ``seconds``, 90% for users with a list and 10% for unknown
users (the popularity fallback). The client runs on the same machine as the
worker, the broker and Redis, and shares its CPUs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np

from bench.load import produce
from bench.run import Fleet
from streamrec.settings import Settings

PATH = "/recs/{user}?n=20"


def measure_reads(base: Settings, bundle: Path, *, rate: float, seconds: float, users: int,
                  items: int, log_dir: Path) -> dict[str, object]:
    fleet = Fleet(base, bundle, "streamrec", 1, log_dir)
    s = fleet.settings
    try:
        fleet.start()
        asyncio.run(produce(s, s.clicks_topic, events=2 * users, rate=None, users=users,
                            items=items, run="lists", seed=3))
        fleet.wait_events(2 * users)
        port = fleet.workers[0].settings.web_port
        lat_ms, errors, sent_s = asyncio.run(_load(port, rate, seconds, users,
                                                   fleet.workers[0].token))
    finally:
        fleet.stop()
    ok = np.asarray(lat_ms)
    failed = sum(errors.values())
    return {"offered_rate": rate, "requests": len(lat_ms) + failed, "errors": errors,
            "achieved_rate": round((len(lat_ms) + failed) / sent_s, 1),
            "latency_ms": {f"p{q}": round(float(np.percentile(ok, q)), 2) for q in (50, 95, 99)}
            | {"max": round(float(ok.max()), 2)} if len(ok) else {}}


async def _load(port: int, rate: float, seconds: float, users: int,
                token: str | None = None) -> tuple[list[float], dict[str, int], float]:
    rng = np.random.default_rng(0)
    n = int(rate * seconds)
    known = rng.random(n) < 0.9
    ids = rng.integers(0, users, n)
    lat: list[float] = []
    errors: dict[str, int] = {}

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        user = f"u{ids[i]}" if known[i] else f"unknown-{i}"
        t0 = time.perf_counter()
        try:
            async with session.get(f"http://127.0.0.1:{port}{PATH.format(user=user)}") as r:
                body = await r.read()
                what = "ok" if r.status == 200 else f"HTTP {r.status}: {body[:80]!r}"
        except (aiohttp.ClientError, OSError) as e:
            what = type(e).__name__
        if what == "ok":
            lat.append((time.perf_counter() - t0) * 1000)
        else:
            errors[what] = errors.get(what, 0) + 1

    connector = aiohttp.TCPConnector(limit=256)
    auth = {"Authorization": f"Bearer {token}"} if token else None  # STREAMREC_WEB_TOKENS
    async with aiohttp.ClientSession(connector=connector, headers=auth) as session:
        for _ in range(50):  # warm the connection pool and the worker
            await one(session, 0)
        lat.clear()
        errors.clear()
        tasks = []
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i)))
        sent = time.perf_counter() - start
        await asyncio.gather(*tasks)
    return lat, errors, sent
