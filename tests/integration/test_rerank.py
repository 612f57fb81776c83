"""Re-ranking on a real worker: blocklisted items never reach Redis; every item has a reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from serving.bundle import load_bundle
from serving.funnel import recommend
from serving.reader import RecsReader
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from tests.integration.conftest import WorkerProc, send_histories

pytestmark = pytest.mark.integration


def test_blocklisted_items_never_reach_redis_and_reasons_are_stored(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path,
) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    histories = {f"rr{u}": list(bundle.vocab.ids[u * 3:u * 3 + 3]) for u in range(30)}
    # block the items these users would get most often without rules
    counts: dict[str, int] = {}
    for r in recommend(bundle, list(histories.values()), 10):
        for i in r.items:
            counts[i] = counts.get(i, 0) + 1
    blocked = sorted(counts, key=lambda i: -counts[i])[:3]
    s = make_settings(top_n=10, rerank_blocklist=",".join(blocked), rerank_pins="2:house-pick",
                      rerank_mmr_lambda=0.8)
    w = start_worker(s, tiny_bundle_dir)
    now = int(time.time() * 1000)
    cold = (b"cold", encode_event(ClickEvent("cold/0", "cold", "not-in-model", now)))
    w.wait_events(send_histories(s, histories, now, [cold]))
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in [*histories, "cold"]:
        r = reader.get_recommendations(u)
        assert r is not None and len(r.items) == 10, u
        assert not set(blocked) & set(r.items), (u, r.items)
        assert r.items[2] == "house-pick" and r.reasons is not None and len(r.reasons) == 10
        assert r.reasons[2] == "pinned"
        assert set(r.reasons) <= {"sequence", "new_item", "trending", "popular", "fresh", "pinned"}
    assert set(reader.get_recommendations("rr0").reasons or []) - {"pinned"} <= {"sequence", "popular"}
    # and the HTTP API returns them
    status, body = w.get("/recs/rr0?n=3")
    rec = orjson.loads(body)
    assert status == 200 and rec["reasons"][2] == "pinned" and len(rec["reasons"]) == 3
