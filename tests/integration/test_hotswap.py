"""Hot-swap under load, refusal of bad bundles, broadcast to every worker, rollback."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.bundle import load_bundle
from serving.keys import recs_key
from serving.registry import Announcement, BundleStore, announce, publish_bundle
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.corrupt import CASES, rewrite_manifest
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings, Path], WorkerProc]
NO_BUNDLE = Path("/nonexistent/bundle")  # workers must get their model from announcements


def publish(s: Settings, bundle: Path) -> Announcement:
    return asyncio.run(publish_bundle(s, bundle, validate=False))


def wait_version(w: WorkerProc, version: str, timeout: float = 60) -> dict[str, str]:
    return w.wait_for(lambda st: st.get("model_version") == version, timeout, f"version {version}")


def clicks(users: int, steps: range, items: list[str]) -> list[tuple[bytes, bytes]]:
    return [(f"u{u}".encode(), encode_event(ClickEvent(f"u{u}/{t}", f"u{u}", items[(u + t) % len(items)],
                                                       int(time.time() * 1000))))
            for t in steps for u in range(users)]


def test_swap_under_load_loses_nothing_and_is_one_way(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store")
    items = list(load_bundle(tiny_bundle_dir).vocab.ids)
    a = publish(s, tiny_bundle_dir)
    w = start_worker(s, NO_BUNDLE)
    wait_version(w, a.version)

    users, steps = 200, 20
    seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
    done = threading.Event()

    def produce() -> None:
        for t in range(steps):  # ~4,000 clicks over ~4 s
            asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks(users, range(t, t + 1), items)))
            time.sleep(0.2)
        done.set()

    def watch() -> None:  # sample every user's list while the swap happens
        while not done.is_set() or int(w.status().get("events", 0)) < users * steps:
            pipe = w.client.pipeline(transaction=False)
            for u in range(users):
                pipe.hmget(recs_key(s.key_prefix, f"u{u}"), "generated_at", "model_version")
            for u, (gen, ver) in enumerate(pipe.execute()):
                if gen:
                    seen[f"u{u}"].append((int(gen), ver))
            time.sleep(0.05)

    threads = [threading.Thread(target=produce), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    b = publish(s, tiny_bundle_b)
    for t in threads:
        t.join(120)
    st = wait_version(w, b.version)
    st = w.wait_events(users * steps)
    assert int(st["events"]) == int(st["applied"]) == users * steps  # every event, once
    assert st["previous_version"] == a.version and float(st["swap_ms"]) > 0
    for u in range(users):
        final = w.client.hgetall(recs_key(s.key_prefix, f"u{u}"))
        assert final["last_event_id"] == f"u{u}/{steps - 1}" and final["model_version"] == b.version
        versions = [v for _, v in sorted(seen[f"u{u}"])]
        assert set(versions) <= {a.version, b.version}
        if b.version in versions:  # one-way: never B then A
            assert a.version not in versions[versions.index(b.version):]
    assert any(a.version in [v for _, v in obs] for obs in seen.values())  # A did serve


def test_corrupt_bundles_are_refused_and_the_old_one_keeps_serving(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tmp_path: Path,
) -> None:
    s = make_settings(bundle_store=tmp_path / "store")
    a = publish(s, tiny_bundle_dir)
    w = start_worker(s, NO_BUNDLE)
    wait_version(w, a.version)
    store = BundleStore(s.bundle_store)
    for corrupt, check, _ in CASES:
        d = tmp_path / corrupt.__name__
        shutil.copytree(tiny_bundle_dir, d)
        rewrite_manifest(d, lambda m, n=corrupt.__name__: m.update(version=f"bad-{n}"))
        corrupt(d)
        shutil.copytree(d, store.path(f"bad-{corrupt.__name__}"))
        bad = store.announcement(f"bad-{corrupt.__name__}")
        asyncio.run(announce(s, bad))
        st = w.wait_for(lambda st, n=corrupt.__name__: f"bad-{n}" in st.get("last_rejection", ""),
                        60, f"rejection of {corrupt.__name__}")
        assert f" {check}: " in st["last_rejection"], st["last_rejection"]
        assert st["model_version"] == a.version
    assert int(w.status()["bundles_rejected"]) == len(CASES)
    item = load_bundle(tiny_bundle_dir).vocab.ids[0]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks(5, range(1), [item])))
    w.wait_events(5)
    assert w.proc.poll() is None  # never exits because of a bad bundle
    for u in range(5):
        assert w.client.hget(recs_key(s.key_prefix, f"u{u}"), "model_version") == a.version


def test_every_worker_switches_late_joiner_starts_on_current_and_rollback(
    make_settings: Callable[..., Settings], start_worker: StartWorker, tiny_bundle_dir: Path,
    tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s1 = make_settings(bundle_store=tmp_path / "store")
    a = publish(s1, tiny_bundle_dir)
    w1 = start_worker(s1, NO_BUNDLE)
    w2 = start_worker(replace_id(s1, "second"), NO_BUNDLE)
    for w in (w1, w2):
        wait_version(w, a.version)
    b = publish(s1, tiny_bundle_b)
    for w in (w1, w2):
        wait_version(w, b.version)
    w3 = start_worker(replace_id(s1, "late"), NO_BUNDLE)
    st = wait_version(w3, b.version)
    assert st["previous_version"] == ""  # started on B directly, never served A
    rollback = BundleStore(s1.bundle_store).announcement(a.version, reason="rollback")
    asyncio.run(announce(s1, rollback))
    for w in (w1, w2, w3):
        st = wait_version(w, a.version)
        assert st["swap_reason"] == "rollback" and st["previous_version"] == b.version


def replace_id(s: Settings, suffix: str) -> Settings:
    return s.model_copy(update={"worker_id": f"{s.worker_id}-{suffix}"})
