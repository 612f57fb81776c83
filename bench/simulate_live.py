"""The user simulator against the live system: simulated users click through the broker,
the workers write their lists to Redis, and the users read them back.

The users are :class:`bench.simulate.SimUsers` (hidden sequential preferences, position
bias, clicks outside the list). Each run:

1. sends every user's warm-up clicks to the clicks topic and waits until each user's list
   in Redis names the user's last event;
2. then, step after step, every user reads its list (from Redis, as :mod:`serving.reader`
   does, or from a worker's ``GET /recs/{user}``), sees its first ``top_k`` items,
   reports them as shown on the impressions topic (``{list_id, user_id, shown, ts}``),
   and clicks according to its preferences, the click naming the ``list_id`` it came from;
   the step ends when every user's list names that click.

What the workers count (online metrics, an experiment's arms, team-draft wins) is read
back from the workers; the simulator also counts, from the lists it read, what each
click scored against the list the user held, per arm. With no shown-report narrowing
(``STREAMREC_IMPRESSIONS_SHOWN`` off) the two agree exactly.

After the warm-up and after each step a hook can look at the system: ``--watch-canary``
runs one step of the canary controller (:func:`serving.rollout.canary_step`) each time
and stops once it has decided, so a canary is promoted or rolled back with no operator.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.simulate import SimSpec, SimUsers
from serving.keys import recs_key
from serving.online import OnlineCounts, click_rank
from serving.reader import Recommendations, parse
from serving.redis_client import sync_client
from streamrec.errors import WaitTimedOut
from streamrec.events import ClickEvent, encode_event
from streamrec.impressions import Impression, encode_impression
from streamrec.settings import Settings
from training.data.synthetic import SyntheticSpec, world

REDIS = "redis"
HTTP = "http"
NO_LIST = "none"  # the arm of a click whose user had no list


@dataclass
class LiveResult:
    users: int
    steps: int  # steps played (fewer than asked when a hook stopped the run)
    clicks: int = 0
    shown_reports: int = 0
    counts: dict[str, OnlineCounts] = field(default_factory=dict)  # per arm, as read
    events: list[dict[str, Any]] = field(default_factory=list)  # what the hook reported
    seconds: float = 0.0
    wait_s: float = 0.0  # of which: waiting for the workers' lists

    def as_dict(self) -> dict[str, Any]:
        return {"users": self.users, "steps": self.steps, "clicks": self.clicks,
                "shown_reports": self.shown_reports, "seconds": self.seconds,
                "wait_s": self.wait_s, "events": self.events,
                "arms": {a: {"clicks": c.clicks, **c.ratios()} for a, c in self.counts.items()}}


# after the warm-up (step 0) and after each step: (steps played, result so far) -> an event
# to record (None: nothing), and whether to stop
StepHook = Callable[[int, LiveResult], Awaitable[tuple[dict[str, Any] | None, bool]]]


class Lists:
    """Reads the users' lists: from Redis (one pipeline per step) or over HTTP."""

    def __init__(self, settings: Settings, via: str = REDIS, base_url: str = "",
                 token: str = "") -> None:
        if via not in (REDIS, HTTP):
            raise ValueError(f"lists are read from {REDIS!r} or {HTTP!r}, not {via!r}")
        if via == HTTP and not base_url:
            raise ValueError("reading lists over HTTP needs the worker's base URL")
        self.via, self.base_url, self.token = via, base_url.rstrip("/"), token
        self.prefix = settings.key_prefix
        self.client = sync_client(settings.redis_url.get_secret_value(), settings.redis_cluster)

    def last_events(self, users: Sequence[str]) -> list[str | None]:
        pipe = self.client.pipeline(transaction=False)
        for u in users:
            pipe.hget(recs_key(self.prefix, u), "last_event_id")
        return [None if v is None else v.decode() for v in pipe.execute()]

    async def read(self, users: Sequence[str], n: int) -> list[Recommendations | None]:
        if self.via == REDIS:
            pipe = self.client.pipeline(transaction=False)
            for u in users:
                pipe.hgetall(recs_key(self.prefix, u))
            return [parse(u, raw) if raw else None
                    for u, raw in zip(users, pipe.execute(), strict=True)]
        return await self._read_http(users, n)

    async def _read_http(self, users: Sequence[str], n: int) -> list[Recommendations | None]:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        sem = asyncio.Semaphore(32)
        async with aiohttp.ClientSession(headers=headers) as http:
            async def one(u: str) -> Recommendations | None:
                async with sem, http.get(f"{self.base_url}/recs/{u}", params={"n": str(n)}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"GET /recs/{u}: HTTP {r.status}: {await r.text()}")
                    body = await r.json()
                if body.get("fallback"):
                    return None  # no stored list: the user sees the fallback, which names no click
                return Recommendations(
                    user_id=u, items=body["items"], scores=body["scores"], source=body["source"],
                    model_version=body["model_version"], generated_at=body["generated_at"],
                    last_event_id=body["last_event_id"], last_event_ts=body["last_event_ts"],
                    seq=body["seq"], reasons=body.get("reasons"), list_id=body.get("list_id"),
                    arm=body.get("arm"))
            return list(await asyncio.gather(*(one(u) for u in users)))

    def close(self) -> None:
        self.client.close()


async def run(settings: Settings, world_spec: SyntheticSpec, spec: SimSpec, *,
              lists: Lists | None = None, report_shown: bool = True, timeout_s: float = 120.0,
              hook: StepHook | None = None, run_id: str = "",
              on_progress: Callable[[str], None] = lambda _: None) -> LiveResult:
    """Play ``spec.steps`` steps of ``spec.users`` simulated users against the running
    workers (the settings name the topics, Redis and its key prefix)."""
    from aiokafka import AIOKafkaProducer

    from streamrec.kafka import client_kwargs

    t0 = time.monotonic()
    run_id = run_id or uuid.uuid4().hex[:8]
    sim = SimUsers(world(world_spec), spec, prefix=f"sim-{run_id}-")
    users = sim.ids
    lists = lists or Lists(settings)
    result = LiveResult(spec.users, 0)
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5)
    await producer.start()
    try:
        seq = [0] * spec.users

        def click(u: int, item: str, list_id: str | None) -> tuple[bytes, bytes]:
            eid = f"{users[u]}:{seq[u]}"
            seq[u] += 1
            return users[u].encode(), encode_event(
                ClickEvent(eid, users[u], item, int(time.time() * 1000), list_id=list_id))

        warm = [click(u, item, None) for u in range(spec.users) for item in sim.histories[u]]
        on_progress(f"warm-up: {len(warm)} clicks of {spec.users} users to {settings.clicks_topic}")
        result.wait_s += await _send_and_wait(producer, settings.clicks_topic, warm, lists, users,
                                              seq, timeout_s)
        if await _look(hook, result):
            return _done(result, t0)
        for step in range(spec.steps):
            held = await lists.read(users, settings.top_n)
            shown_records: list[tuple[bytes, bytes]] = []
            clicks: list[tuple[bytes, bytes]] = []
            now = int(time.time() * 1000)
            for u, r in enumerate(held):
                items = [] if r is None else r.items
                shown = items[:spec.top_k]
                if report_shown and r is not None and r.list_id:
                    shown_records.append((users[u].encode(), encode_impression(
                        Impression(r.list_id, users[u], now, shown=shown))))
                item = sim.click(u, shown)
                arm = NO_LIST if r is None else (r.arm or NO_LIST)
                result.counts.setdefault(arm, OnlineCounts()).add(
                    click_rank(items, item), attributed=r is not None and bool(r.list_id))
                clicks.append(click(u, item, None if r is None else r.list_id))
            if shown_records:  # reports first: what was shown comes before what was clicked
                await _send(producer, settings.impressions_topic, shown_records)
                result.shown_reports += len(shown_records)
            result.wait_s += await _send_and_wait(producer, settings.clicks_topic, clicks, lists,
                                                  users, seq, timeout_s)
            result.clicks += len(clicks)
            result.steps = step + 1
            on_progress(f"step {step + 1}/{spec.steps}: {result.clicks} clicks")
            if await _look(hook, result):
                break
    finally:
        await producer.stop()
        lists.close()
    return _done(result, t0)


def _done(result: LiveResult, t0: float) -> LiveResult:
    result.seconds = time.monotonic() - t0
    return result


async def _look(hook: StepHook | None, result: LiveResult) -> bool:
    """The hook's look after the warm-up (step 0) or a step; whether to stop."""
    if hook is None:
        return False
    event, stop = await hook(result.steps, result)
    if event is not None:
        result.events.append({"step": result.steps, "clicks": result.clicks, **event})
    return stop


async def _send(producer: Any, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in records])


async def _send_and_wait(producer: Any, topic: str, records: Sequence[tuple[bytes, bytes]],
                         lists: Lists, users: Sequence[str], seq: Sequence[int],
                         timeout_s: float) -> float:
    """Send the clicks, then wait until every user's list names its last one; the wait's
    seconds. Raises :class:`WaitTimedOut` naming the users still behind."""
    await _send(producer, topic, records)
    start = time.monotonic()
    want = {u: f"{u}:{seq[n] - 1}" for n, u in enumerate(users)}
    pending = list(users)
    while pending:
        got = lists.last_events(pending)
        pending = [u for u, e in zip(pending, got, strict=True) if e != want[u]]
        if not pending:
            break
        if time.monotonic() - start > timeout_s:
            raise WaitTimedOut(f"{len(pending)} of {len(users)} users' lists did not reflect "
                               f"their last click within {timeout_s:.0f} s (first: {pending[0]}); "
                               "are the workers running on these topics and this key prefix?")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def canary_hook(settings: Settings) -> StepHook:
    """After each step, one look by the canary controller; stop once it has decided."""
    from serving import experiments as ex
    from serving.rollout import canary_step

    async def hook(step: int, result: LiveResult) -> tuple[dict[str, Any] | None, bool]:
        looked = await canary_step(settings)
        if looked is None:
            return {"canary": "none running"}, True
        exp, d = looked
        return {"experiment": exp.name, "action": d.action, "why": d.why}, d.action != ex.WAIT

    return hook


def summary(res: LiveResult) -> list[str]:
    rows = [(f"{res.users} users, {res.steps} steps, {res.clicks} clicks, "
             f"{res.shown_reports} shown reports in {res.seconds:.1f} s "
             f"({res.wait_s:.1f} s waiting for lists)")]
    for arm, c in sorted(res.counts.items()):
        r = c.ratios()
        rows.append(f"  arm {arm:<12} {c.clicks} clicks  HR@10 {r['hr@10']:.4f}  "
                    f"NDCG@10 {r['ndcg@10']:.4f}  on list {r['on_list']:.4f}")
    rows += [f"  step {e['step']} ({e['clicks']} clicks): "
             + ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("step", "clicks"))
             for e in res.events]
    return rows


def dumps(res: LiveResult, extra: dict[str, Any]) -> bytes:
    return orjson.dumps({**extra, **res.as_dict()}, option=orjson.OPT_INDENT_2)
