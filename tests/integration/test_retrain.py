"""Impression negatives read from real topics, and ``streamrec retrain`` end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from bench.impression_negatives import simulate_log
from serving.registry import announcement_history, publish_bundle
from streamrec.events import ClickEvent, encode_event
from streamrec.impressions import Impression, encode_impression
from streamrec.settings import Settings
from streams.replay import send_raw
from training.data.from_topic import encode_negatives, read_impressions, read_topic
from training.data.sequences import SequenceData
from training.data.synthetic import SyntheticSpec, generate
from training.pipeline import load_topic_data
from training.retrain import last_bundle_ms, retrain

pytestmark = pytest.mark.integration


def _click(eid: str, user: str, item: str, ts: int, list_id: str | None = None) -> tuple[bytes, bytes]:
    return user.encode(), encode_event(ClickEvent(eid, user, item, ts, list_id=list_id))


def _imp(imp: Impression) -> tuple[bytes, bytes]:
    return imp.user_id.encode(), encode_impression(imp)


def test_clicks_matched_to_the_lists_read_from_the_topics(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [
        _click("1", "u", "a", 1_000), _click("2", "u", "b", 2_000),
        _click("3", "u", "c", 3_000, list_id="L1"), _click("4", "v", "a", 2_500)]))
    asyncio.run(send_raw(s.kafka_bootstrap, s.impressions_topic, [
        _imp(Impression("L1", "u", 500, items=["a", "b", "c", "d"])),
        _imp(Impression("L2", "u", 1_500, items=["d", "b", "e", "c"])),
        _imp(Impression("L2", "u", 1_600, shown=["d", "b"])),  # the application showed two
        (b"u", b'{"list_id": "L3", "user_id": "u", "ts": 1}'),  # neither items nor shown
        (b"v", b"{not json"),
        _imp(Impression("M", "v", 2_000, items=["c", "a", "b"]))]))
    imps = asyncio.run(read_impressions(s.kafka_bootstrap, s.impressions_topic))
    assert (imps.records, imps.invalid) == (6, 2)
    read = asyncio.run(read_topic(s.kafka_bootstrap, s.clicks_topic))
    assert read.data.users == ["u", "v"]
    negs = encode_negatives(read.data, read.clicks, imps, top_k=3)
    named = [[read.data.vocab.decode(p) for p in u] for u in negs]
    # u: a at 1000 held L1 (top 3: a b c); b at 2000 held L2, shown d b (d never clicked:
    # no vector, dropped); c names L1. v: a at 2500 held M.
    assert named == [[["b", "c"], [], ["a", "b"]], [["c", "b"]]]
    said: list[str] = []
    _, again = load_topic_data(s, top_k=3, on_read=said.append)
    assert again == negs
    assert "2 invalid" in said[1] and "3 lists" in said[1]


def _send_log(s: Settings, data: SequenceData, users: slice) -> None:
    log = simulate_log(data)
    clicks, imps = [], []
    for u, row in list(zip(data.users, log.clicks, strict=True))[users]:
        for j, c in enumerate(row):
            clicks.append(_click(f"{u}:{j}:{time.time_ns()}", u, c.item, c.ts, c.list_id))
            lid = f"{u}:{j}"
            imps.append(_imp(Impression(lid, u, c.ts - 500, items=log.impressions.written[lid])))
    asyncio.run(send_raw(s.kafka_bootstrap, s.impressions_topic, imps))
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))


def test_retrain_reads_since_the_last_bundle_and_publishes(make_settings: Callable[..., Settings],
                                                           tmp_path: Path) -> None:
    s = make_settings(bundle_store=tmp_path / "store")
    data = generate(SyntheticSpec(users=40, items=30, clusters=3, mean_len=6, seed=5))
    _send_log(s, data, slice(0, 40))
    flags = {"epochs": 2, "loss": "sampled", "negatives": 16, "impression_negatives": 3, "seed": 1,
             "dim": 16, "heads": 1, "layers": 1, "max_len": 20}

    async def publish(settings: Settings, bundle: Path) -> str:
        return (await publish_bundle(settings, bundle)).version

    assert asyncio.run(last_bundle_ms(s)) is None
    first = retrain(s, tmp_path / "b1", config=None, flags=flags, publish=publish)
    assert first["since_ms"] is None and first["impression_positions"] > 0
    history = asyncio.run(announcement_history(s))
    assert [a.version for a in history] == [first["published"]] == [first["version"]]
    made = asyncio.run(last_bundle_ms(s))
    assert made is not None

    time.sleep(1.1)  # created_at has one-second resolution
    _send_log(s, data, slice(0, 12))  # only these users click after the first bundle
    env = {**os.environ, "STREAMREC_CLICKS_TOPIC": s.clicks_topic,
           "STREAMREC_IMPRESSIONS_TOPIC": s.impressions_topic,
           "STREAMREC_MODEL_UPDATES_TOPIC": s.model_updates_topic,
           "STREAMREC_BUNDLE_STORE": str(s.bundle_store)}
    proc = subprocess.run([sys.executable, "-m", "cli", "retrain", "--no-publish", "--json",
                           "--out", str(tmp_path / "b2"), "--epochs", "2", "--loss", "sampled",
                           "--negatives", "16", "--impression-negatives", "3", "--seed", "1"],
                          env=env, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    report = orjson.loads(proc.stdout)
    assert report["since_ms"] == made and report["published"] is None
    assert ", 12 users" in proc.stderr.decode()  # only the clicks after the first bundle
    assert report["impression_positions"] > 0 and (tmp_path / "b2" / "manifest.json").is_file()
    assert [a.version for a in asyncio.run(announcement_history(s))] == [first["version"]]
