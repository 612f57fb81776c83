"""The live user simulator against a real worker, broker and Redis: what the users saw
and clicked is what the workers counted, read over Redis or HTTP, and the canary
controller run from the simulator rolls a broken canary back with no operator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import simulate_live as live
from bench.simulate import SimSpec
from serving import experiments as ex
from serving.experiments import CanaryPolicy
from serving.online import KS, OnlineCounts
from serving.registry import BundleStore, publish_bundle
from serving.rollout import publish_canary, read_counts, start_experiment
from streamrec.settings import Settings
from tests.conftest import TINY
from tests.integration.conftest import WorkerProc, consume
from tests.integration.test_experiments import NO_BUNDLE, _running, _shuffled

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings, Path], WorkerProc]


def _minus(after: OnlineCounts, before: OnlineCounts) -> OnlineCounts:
    return OnlineCounts.from_fields({k: v - before.fields()[k] for k, v in after.fields().items()})


def _same(a: OnlineCounts, b: OnlineCounts) -> None:
    assert (a.clicks, a.on_list, a.attributed) == (b.clicks, b.on_list, b.attributed)
    assert {k: a.hits[k] for k in KS} == {k: b.hits[k] for k in KS}
    assert a.reciprocal_rank == pytest.approx(b.reciprocal_rank)
    assert a.ndcg10 == pytest.approx(b.ndcg10)


def test_what_simulated_users_clicked_is_what_the_workers_counted_per_arm(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store", impressions=True)
    asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    b = BundleStore(s.bundle_store).publish(tiny_bundle_b)
    w = start_worker(s, NO_BUNDLE)
    asyncio.run(start_experiment(s, "live-ab", [ex.parse_arm("control=current:50"),
                                                ex.parse_arm(f"treatment={b.version}:50")]))
    _running(w, "live-ab")
    before: dict[str, OnlineCounts] = {}

    async def snapshot(step: int, _: live.LiveResult) -> tuple[dict[str, Any] | None, bool]:
        if step == 0:  # the warm-up's own clicks are counted too: take them off
            before.update(read_counts(s, "live-ab")[0])
        return None, False

    spec = SimSpec(users=40, steps=3, warmup=3, top_k=5, seed=4)
    res = asyncio.run(live.run(s, TINY, spec, hook=snapshot))
    assert res.steps == 3 and res.clicks == 120 and res.shown_reports == 120
    assert set(res.counts) == {"control", "treatment"}  # every user held a list, of its arm
    after, _ = read_counts(s, "live-ab")
    for arm, mine in res.counts.items():
        _same(_minus(after[arm], before.get(arm, OnlineCounts())), mine)
        assert mine.attributed == mine.clicks  # every click named the list it came from
    assert sum(c.on_list for c in res.counts.values()) > 0

    # the users' shown reports are on the impressions topic, each naming a written list
    total = int(w.status()["lists_written"]) + res.shown_reports
    records = [orjson.loads(v) for _, v in consume(s.kafka_bootstrap, s.impressions_topic, total,
                                                   timeout=60)]
    assert len(records) >= total
    written = {r["list_id"] for r in records if "items" in r}
    shown = [r for r in records if "shown" in r]
    assert len(shown) == res.shown_reports and all(r["list_id"] in written and len(r["shown"]) <= spec.top_k for r in shown)

    # the same over HTTP: the users read GET /recs/{user} on the worker
    lists = live.Lists(s, live.HTTP, f"http://127.0.0.1:{w.settings.web_port}")
    base = read_counts(s, "live-ab")[0]
    res2 = asyncio.run(live.run(s, TINY, SimSpec(users=20, steps=2, warmup=2, top_k=5, seed=5),
                                lists=lists, report_shown=False))
    assert res2.clicks == 40 and res2.shown_reports == 0
    after2, _ = read_counts(s, "live-ab")
    warm_clicks = sum(c.clicks for c in _deltas(after2, base).values()) - res2.clicks
    assert 0 <= warm_clicks <= 20  # a user's second warm-up click may find its first list
    assert sum(c.on_list for c in res2.counts.values()) > 0


def _deltas(after: dict[str, OnlineCounts], before: dict[str, OnlineCounts]) -> dict[str, OnlineCounts]:
    return {a: _minus(c, before.get(a, OnlineCounts())) for a, c in after.items()}


def test_a_broken_canary_is_rolled_back_by_the_simulated_users_clicks(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store")
    a = asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    w = start_worker(s, NO_BUNDLE)
    policy = CanaryPolicy(margin=0.02, confidence=0.95, min_clicks=100, max_clicks=2000)
    broken = asyncio.run(publish_canary(s, _shuffled(tiny_bundle_dir, tmp_path / "broken"), 50,
                                        policy))
    _running(w, broken.name)
    res = asyncio.run(live.run(s, TINY, SimSpec(users=100, steps=20, warmup=4, seed=6),
                               hook=live.canary_hook(s)))
    last = res.events[-1]
    assert last["action"] == ex.ROLLBACK, res.events
    assert res.steps < 20 and res.clicks <= policy.max_clicks  # decided within the budget
    assert [e["action"] for e in res.events[:-1]] == [ex.WAIT] * (len(res.events) - 1)
    w.wait_for(lambda st: st.get("experiment") == "" and st.get("model_version") == a.version, 60,
               "the rollback: no experiment, the current version")
