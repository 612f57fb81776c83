"""The ranking stage on a real worker: Redis gets the ranker's lists, not retrieval's."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.bundle import load_bundle
from serving.funnel import recommend
from serving.reader import RecsReader
from streamrec.settings import Settings
from tests.integration.conftest import WorkerProc, send_histories

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["on", "off"])
def test_the_worker_writes_the_funnels_lists(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_ranker_bundle: Path, mode: str,
) -> None:
    bundle = load_bundle(tiny_ranker_bundle)
    histories = {f"rk{u}": list(bundle.vocab.ids[u * 2:u * 2 + 4]) for u in range(30)}
    want = dict(zip(histories, recommend(bundle, list(histories.values()), 10, ranking=mode),
                    strict=True))
    other = dict(zip(histories, recommend(bundle, list(histories.values()), 10,
                                          ranking="off" if mode == "on" else "on"), strict=True))
    assert any(want[u].items != other[u].items for u in histories)  # the test can tell them apart
    s = make_settings(top_n=10, ranker=mode)
    w = start_worker(s, tiny_ranker_bundle)
    w.wait_events(send_histories(s, histories, int(time.time() * 1000)))
    reader = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix)
    for u in histories:
        got = reader.get_recommendations(u)
        assert got is not None and got.items == want[u].items, u
