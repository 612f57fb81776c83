"""Online metrics on a live worker: each click against the list its user held before it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from serving.bundle import load_bundle
from serving.online import from_prometheus
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.impressions import decode_impression
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc, consume, send_histories


def test_clicks_on_the_held_lists_are_counted_by_rank(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings()
    w = start_worker(s, tiny_bundle_dir)
    ids = load_bundle(tiny_bundle_dir).vocab.ids
    users = {f"u{n}": [ids[n]] for n in range(20)}  # one click each: no list before it
    now = int(time.time() * 1000)
    sent = send_histories(s, users, now)
    w.wait_events(sent)
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    held = {u: reader.get_recommendations(u) for u in users}
    assert all(r is not None and len(r.items) == s.top_n for r in held.values())
    # even users click their list's first item, odd users its third, u0 an item off the list
    nxt = {u: [r.items[0] if k % 2 == 0 else r.items[2]]  # type: ignore[union-attr]
           for k, (u, r) in enumerate(held.items())}
    nxt["u0"] = ["never-recommended"]
    second = [(u.encode(), encode_event(ClickEvent(f"{u}/second", u, items[0], now + 1000)))
              for u, items in nxt.items()]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, second))
    sent += len(second)
    w.wait_events(sent)
    online = from_prometheus(w.get("/metrics")[1].decode())
    version = held["u1"].model_version  # type: ignore[union-attr]
    got = online[f"{version}/all"]
    # the first round's clicks had no list yet; the second round's 20 each had one
    assert got["clicks"] == 20 and online["without_list"]["clicks"] == 20
    assert got["hr@1"] == 9 / 20 and got["hr@5"] == 19 / 20 and got["on_list"] == 19 / 20
    assert abs(got["mrr"] - (9 + 10 / 3) / 20) < 1e-9


def test_each_written_list_has_an_impression_and_a_click_naming_it_is_attributed(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    s = make_settings(impressions=True)
    w = start_worker(s, tiny_bundle_dir)
    ids = load_bundle(tiny_bundle_dir).vocab.ids
    users = {f"u{n}": [ids[n]] for n in range(10)}
    now = int(time.time() * 1000)
    sent = send_histories(s, users, now)
    w.wait_events(sent)
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    held = {u: reader.get_recommendations(u) for u in users}
    impressions = [decode_impression(k, v, 1 << 20)
                   for k, v in consume(s.kafka_bootstrap, s.impressions_topic, len(users))]
    by_user = {i.user_id: i for i in impressions}
    assert set(by_user) == set(users)
    for u, r in held.items():
        assert r is not None and r.list_id is not None
        imp = by_user[u]
        assert (imp.list_id, imp.items, imp.reasons, imp.model_version) == \
               (r.list_id, r.items, r.reasons, r.model_version)
    status, body = w.get("/recs/u3")
    assert status == 200 and orjson.loads(body)["list_id"] == held["u3"].list_id  # type: ignore[union-attr]
    # u0 names the list it clicked from, u1 an older list, u2 none
    named = {"u0": held["u0"].list_id, "u1": "some-old-list", "u2": None}  # type: ignore[union-attr]
    clicks = [(u.encode(), encode_event(ClickEvent(f"{u}/2", u, held[u].items[0], now + 1000,  # type: ignore[union-attr]
                                                   list_id=lid)))
              for u, lid in named.items()]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))
    w.wait_events(sent + len(clicks))
    got = from_prometheus(w.get("/metrics")[1].decode())[f"{held['u0'].model_version}/all"]  # type: ignore[union-attr]
    assert got["clicks"] == 3 and got["hr@1"] == 1.0 and abs(got["attributed"] - 1 / 3) < 1e-9


def test_shown_reports_narrow_the_held_list_and_bad_ones_are_dead_lettered(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    from streamrec.impressions import Impression, encode_impression

    s = make_settings(impressions_shown=True)
    w = start_worker(s, tiny_bundle_dir)
    ids = load_bundle(tiny_bundle_dir).vocab.ids
    users = {f"u{n}": [ids[n]] for n in range(4)}
    now = int(time.time() * 1000)
    sent = send_histories(s, users, now)
    w.wait_events(sent)
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    held = {u: reader.get_recommendations(u) for u in users}
    # the application displayed only the first 3 items of each list; one report is malformed
    reports = [(u.encode(), encode_impression(Impression(r.list_id or "", u, now + 500,  # type: ignore[union-attr]
                                                         shown=r.items[:3])))  # type: ignore[union-attr]
               for u, r in held.items()]
    bad = [(b"u0", b'{"list_id": "x", "user_id": "u0", "ts": 1}'),  # neither items nor shown
           (b"u1", b"not json")]
    asyncio.run(send_raw(s.kafka_bootstrap, s.impressions_topic, reports + bad))
    dead = consume(s.kafka_bootstrap, s.dlq_topic, 2)
    kinds = sorted(orjson.loads(v)["reason"] for _, v in dead)
    assert len(dead) == 2 and any("either 'items'" in k for k in kinds)
    assert all(orjson.loads(v)["topic"] == s.impressions_topic for _, v in dead)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and w.metric("streamrec_impressions_shown_matched_total", 0) < 4:
        time.sleep(0.2)
    assert w.metric("streamrec_impressions_shown_matched_total") == 4
    # u0 clicks its 2nd item (shown), u1 its 5th (written, not shown)
    clicks = [(b"u0", encode_event(ClickEvent("u0/2", "u0", held["u0"].items[1], now + 1000))),  # type: ignore[union-attr]
              (b"u1", encode_event(ClickEvent("u1/2", "u1", held["u1"].items[4], now + 1000)))]  # type: ignore[union-attr]
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, clicks))
    w.wait_events(sent + 2)
    got = from_prometheus(w.get("/metrics")[1].decode())[f"{held['u0'].model_version}/all"]  # type: ignore[union-attr]
    assert got["clicks"] == 2 and got["hr@5"] == 0.5 and got["on_list"] == 0.5
