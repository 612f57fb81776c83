"""Experiments on real workers: per-arm bundles on two workers, a restart, interleaving,
and the canary controller's promotion and automatic rollback."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest

from serving import experiments as ex
from serving.bundle import load_bundle
from serving.experiments import Arm, CanaryPolicy, assign
from serving.reader import RecsReader
from serving.registry import BundleStore, publish_bundle
from serving.rollout import (
    canary_step,
    publish_canary,
    read_counts,
    start_experiment,
    stop_experiment,
)
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.corrupt import rewrite_manifest
from tests.integration.conftest import WorkerProc, consume

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings, Path], WorkerProc]
NO_BUNDLE = Path("/nonexistent/bundle")


def _reader(s: Settings) -> RecsReader:
    return RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)


def _step(s: Settings, clicks: dict[str, tuple[str, str | None]], tag: str,
          timeout: float = 60) -> None:
    """Send one click per user ``{user: (item, list_id)}`` and wait until every user's list
    reflects it."""
    now = int(time.time() * 1000)
    records = [(u.encode(), encode_event(ClickEvent(f"{u}/{tag}", u, item, now, list_id=lid)))
               for u, (item, lid) in clicks.items()]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    reader, deadline = _reader(s), time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [reader.get_recommendations(u) for u in clicks]
        if all(r is not None and r.last_event_id == f"{u}/{tag}" for u, r in zip(clicks, got, strict=True)):
            return
        time.sleep(0.1)
    pytest.fail(f"lists of step {tag} not written within {timeout}s")


def _running(w: WorkerProc, name: str) -> None:
    w.wait_for(lambda st: st.get("experiment") == name, 60, f"experiment {name}")


def _ready_pair(start_worker: StartWorker, s: Settings) -> tuple[WorkerProc, WorkerProc]:
    w1 = start_worker(s, NO_BUNDLE)
    w2 = start_worker(s.model_copy(update={"worker_id": f"{s.worker_id}-b"}), NO_BUNDLE)
    for w in (w1, w2):
        w.wait_for(lambda st: "partitions" in st, 60, "an assignment")
    deadline = time.monotonic() + 60  # both own partitions: the group has settled
    while time.monotonic() < deadline:
        parts = [w.status().get("partitions", "") for w in (w1, w2)]
        if all(parts) and sorted(",".join(parts).split(",")) == ["0", "1", "2", "3"]:
            return w1, w2
        time.sleep(0.2)
    pytest.fail(f"the two workers did not split the partitions: {parts}")


def test_ab_arms_on_two_workers_follow_the_hash_and_survive_a_restart(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store")
    a = asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    b = BundleStore(s.bundle_store).publish(tiny_bundle_b)  # stored, not announced
    w1, w2 = _ready_pair(start_worker, s)
    exp = asyncio.run(start_experiment(s, "ab1", [ex.parse_arm("control=current:50"),
                                                  ex.parse_arm(f"treatment={b.version}:50")]))
    assert exp.arms[0].version == a.version  # "current" resolved when it started
    for w in (w1, w2):
        _running(w, "ab1")

    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    users = [f"u{n}" for n in range(60)]
    rng = random.Random(0)
    _step(s, {u: (rng.choice(items), None) for u in users}, "0")
    reader = _reader(s)
    held = {u: reader.get_recommendations(u) for u in users}
    version = {"control": a.version, "treatment": b.version}
    for u, r in held.items():
        assert r is not None
        arm = assign(exp, u).name
        assert (r.arm, r.model_version) == (arm, version[arm]), u
    assert {r.arm for r in held.values() if r} == {"control", "treatment"}
    writers = {w1.status().get("lists_written"), w2.status().get("lists_written")}
    assert None not in writers and "0" not in writers  # both workers wrote lists

    # the next click of each user: its list's first item for even users, off the list for odd
    nxt = {u: (r.items[0] if n % 2 == 0 else "not-an-item", r.list_id)
           for n, (u, r) in enumerate(held.items()) if r}
    _step(s, nxt, "1")
    counts, _ = read_counts(s, "ab1")
    assert sum(c.clicks for c in counts.values()) == len(users)
    for arm in ("control", "treatment"):
        mine = [n for n, u in enumerate(users) if assign(exp, u).name == arm]
        c = counts[arm]
        assert c.clicks == len(mine)
        assert c.hits[1] == c.hits[10] == sum(1 for n in mine if n % 2 == 0)
        assert c.attributed == len(mine)  # every click named the list it came from

    # a restarted worker recovers the experiment from the topic
    before = w1.status()["started_at"]
    w1.stop()
    w1b = start_worker(w1.settings.model_copy(update={"web_port": w1.settings.web_port}), NO_BUNDLE)
    w1b.wait_for(lambda st: st.get("started_at") != before and st.get("experiment") == "ab1", 90,
                 "the restarted worker back in the experiment")
    _step(s, {u: (rng.choice(items), None) for u in users}, "2", timeout=90)
    for u in users:
        r = reader.get_recommendations(u)
        assert r is not None and r.arm == assign(exp, u).name

    stopped = asyncio.run(stop_experiment(s, "ab1", promote="treatment"))
    assert stopped.promoted == "treatment"
    for w in (w1b, w2):
        w.wait_for(lambda st: st.get("model_version") == b.version and st.get("experiment") == "",
                   60, "the promoted version everywhere, no experiment")
    _step(s, {u: (rng.choice(items), None) for u in users[:10]}, "3")
    for u in users[:10]:
        r = reader.get_recommendations(u)
        assert r is not None and (r.arm, r.model_version) == ("all", b.version)


def test_interleaving_merges_both_arms_and_credits_each_click(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store", impressions=True)
    a = asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    b = BundleStore(s.bundle_store).publish(tiny_bundle_b)
    w = start_worker(s, NO_BUNDLE)
    exp = asyncio.run(start_experiment(s, "tdi", [Arm("a", a.version), Arm("b", b.version)],
                                       mode=ex.INTERLEAVE))
    _running(w, "tdi")
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    users = [f"u{n}" for n in range(30)]
    rng = random.Random(1)
    _step(s, {u: (rng.choice(items), None) for u in users}, "0")
    reader = _reader(s)
    held = {u: reader.get_recommendations(u) for u in users}
    for r in held.values():
        assert r is not None and r.arm == ex.INTERLEAVED_ARM
        assert r.model_version == f"{a.version}|{b.version}"
        assert len(r.items) == len(set(r.items)) == s.top_n
    imps = [orjson.loads(v) for _, v in consume(s.kafka_bootstrap, s.impressions_topic, len(users))]
    teams = {i["list_id"]: i["teams"] for i in imps}
    assert all(i["experiment"] == "tdi" for i in imps)
    for r in held.values():
        assert r is not None and r.list_id in teams
        t = teams[r.list_id]
        assert len(t) == len(r.items) and set(t) <= {"a", "b"}
        assert abs(t.count("a") - t.count("b")) <= 1  # team draft: the arms alternate
    # click the third item: a win for whichever arm placed it
    _step(s, {u: (r.items[2], r.list_id) for u, r in held.items() if r}, "1")
    counts, wins = read_counts(s, "tdi")
    want = {"a": 0, "b": 0}
    for r in held.values():
        assert r is not None
        want[teams[r.list_id][2]] += 1
    assert wins == {k: v for k, v in want.items() if v}
    assert counts[ex.INTERLEAVED_ARM].clicks == len(users)
    assert counts[ex.INTERLEAVED_ARM].hits[5] == len(users)
    assert exp.running


def _copy(src: Path, dst: Path, suffix: str) -> Path:
    """``src`` as another version (the same weights, ``-{suffix}`` on its version)."""
    shutil.copytree(src, dst)
    rewrite_manifest(dst, lambda m: m.update(version=f"{m['version']}-{suffix}"))
    return dst


def _shuffled(src: Path, dst: Path) -> Path:
    """A bundle that loads and validates but recommends at random (its ids permuted)."""
    _copy(src, dst, "shuffled")
    ids = orjson.loads((dst / "vocab.json").read_bytes())
    random.Random(0).shuffle(ids)
    (dst / "vocab.json").write_bytes(orjson.dumps(ids))
    rewrite_manifest(dst)  # the vocabulary's new checksum
    return dst


def _play(s: Settings, histories: dict[str, Sequence[str]], steps: range, tag: str) -> None:
    """Each user clicks its own next item (the data's sequence), one step at a time."""
    reader = _reader(s)
    for t in steps:
        clicks = {}
        for u, h in histories.items():
            if t < len(h):
                r = reader.get_recommendations(u)
                clicks[u] = (h[t], r.list_id if r else None)
        if clicks:
            _step(s, clicks, f"{tag}{t}")


def _play_until_decided(s: Settings, histories: dict[str, Sequence[str]], tag: str) -> ex.Decision:
    """Two steps of play, then one look by the controller, until it decides (or 12 steps)."""
    decision = ex.Decision(ex.WAIT, "not looked at yet")
    for t in range(0, 12, 2):
        _play(s, histories, range(t, t + 2), tag)
        step = asyncio.run(canary_step(s))
        assert step is not None
        _, decision = step
        if decision.action != ex.WAIT:
            break
    return decision


def test_a_broken_canary_is_rolled_back_and_a_good_one_promoted(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tiny_data: object, tmp_path: Path,
) -> None:
    from training.data.sequences import SequenceData

    assert isinstance(tiny_data, SequenceData)
    s = make_settings(bundle_store=tmp_path / "store")
    a = asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    w = start_worker(s, NO_BUNDLE)
    policy = CanaryPolicy(margin=0.02, confidence=0.95, min_clicks=150, max_clicks=3000)
    histories = {u: tiny_data.vocab.decode(seq) for u, seq in zip(tiny_data.users, tiny_data.seqs,
                                                                  strict=True)}

    broken = asyncio.run(publish_canary(s, _shuffled(tiny_bundle_dir, tmp_path / "broken"), 50,
                                        policy))
    _running(w, broken.name)
    decision = _play_until_decided(s, histories, "x")
    assert decision.action == ex.ROLLBACK, decision
    w.wait_for(lambda st: st.get("experiment") == "" and st.get("model_version") == a.version, 60,
               "the rollback: no experiment, the current version")
    assert asyncio.run(canary_step(s)) is None  # nothing left to decide

    # The good canary has control's weights under another version. Showing that two equal
    # arms differ by less than 0.02 takes thousands of clicks per arm; these users make
    # about 700, so it runs under a wider margin (a weaker model, such as tiny_bundle_b's
    # 3 epochs against 8, was promoted or rolled back by the luck of the split).
    tolerant = CanaryPolicy(margin=0.15, confidence=0.95, min_clicks=150, max_clicks=3000)
    good = asyncio.run(publish_canary(s, _copy(tiny_bundle_dir, tmp_path / "good", "again"), 50,
                                      tolerant))
    _running(w, good.name)
    decision = _play_until_decided(s, histories, "y")
    assert decision.action == ex.PROMOTE, decision
    w.wait_for(lambda st: st.get("model_version") == good.arms[1].version, 60, "the promotion")
