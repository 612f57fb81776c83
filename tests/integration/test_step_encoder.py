"""The step encoder in a real worker: lists from cached encoder state are the lists the
sessions give encoded whole, before and after a swap (which starts from an empty cache)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.bundle import load_bundle
from serving.funnel import Batch, Funnel, FunnelConfig
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc
from tests.integration.test_hotswap import NO_BUNDLE, publish, wait_version

pytestmark = pytest.mark.integration
KEEP = 30  # STREAMREC_SESSION_MAX_LEN here: sessions are cut, the windows placed by count


def _cache_counts(w: WorkerProc) -> dict[str, float]:
    body = w.get("/metrics")[1].decode()
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(body)
            for s in f.samples if s.name == "streamrec_encoder_cache_total"}


def _round(s: Settings, histories: dict[str, list[str]], items: list[str], rng: random.Random) -> int:
    """One click per user, sent; returns how many."""
    records = []
    for u, h in histories.items():
        h.append(rng.choice(items))
        records.append((u.encode(), encode_event(ClickEvent(f"{u}/{len(h)}", u, h[-1],
                                                            int(time.time() * 1000)))))
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, records))
    return len(records)


def _agreement(s: Settings, bundle_dir: Path, histories: dict[str, list[str]], version: str) -> float:
    """Share of users whose stored list is the one their session gives with every window
    encoded whole (no cache)."""
    bundle = load_bundle(bundle_dir, cache_mb=0)
    users = list(histories)
    want = Funnel(FunnelConfig.from_settings(s)).run(bundle, Batch(
        [histories[u][-KEEP:] for u in users], counts=[len(histories[u]) for u in users]))
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    same = 0
    for u, ranked in zip(users, want, strict=True):
        r = reader.get_recommendations(u)
        assert r is not None and r.model_version == version and r.seq == len(histories[u]), u
        same += r.items == ranked.items
    return same / len(users)


def test_cached_steps_serve_the_whole_windows_lists_through_a_swap(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path, tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store", session_max_len=KEEP)
    a = publish(s, tiny_bundle_dir)
    w = start_worker(s, NO_BUNDLE)
    wait_version(w, a.version)
    bundle = load_bundle(tiny_bundle_dir)
    assert bundle.window.anchored and bundle.step is not None and bundle.max_len < KEEP
    rng = random.Random(3)
    items = list(bundle.vocab.ids)
    histories: dict[str, list[str]] = {f"se{u}": [] for u in range(40)}
    sent = 0
    # a round at a time, so that each round after the first is a step per user; past
    # max_len the window's start moves (a prefill), past KEEP the session is cut
    for _ in range(45):
        sent += _round(s, histories, items, rng)
        w.wait_events(sent)
    counts = _cache_counts(w)
    assert counts["step"] > 4 * counts["prefill"] > 0, counts
    assert _agreement(s, tiny_bundle_dir, histories, a.version) >= 0.95  # float16 state: near-ties
    b = publish(s, tiny_bundle_b)
    wait_version(w, b.version)
    for _ in range(3):
        sent += _round(s, histories, items, rng)
        w.wait_events(sent)
    assert _agreement(s, tiny_bundle_b, histories, b.version) >= 0.95
