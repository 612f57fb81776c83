"""The py-spy profile summary of ``streamrec bench --profile`` (pure parsing)."""

from __future__ import annotations

import pytest

from bench.profile import package_of, summarize

# py-spy record --format raw --function --threads: "thread (id): name;frames… count"
COLLAPSED = """\
thread (0x1): MainThread;<module> (cli/__main__.py:3);run (asyncio/runners.py);EpollSelector.select (selectors.py) 30
thread (0x1): MainThread;<module> (cli/__main__.py:3);Stream._c_aiter (faust/streams.py) 20
thread (0x1): MainThread;<module> (cli/__main__.py:3);ClickWorker.finish (streams/worker.py) 10
thread (0x2): ThreadPoolExecutor-0_0;_worker (concurrent/futures/thread.py);Session.run (onnxruntime/capi/onnxruntime_inference_collection.py) 25
thread (0x3): ThreadPoolExecutor-0_1;_worker (concurrent/futures/thread.py);ItemIndex.top_k_unseen (serving/index.py) 15
not a sample line
"""


def test_each_thread_gets_its_share_and_its_top_functions_and_packages() -> None:
    s = summarize(COLLAPSED.splitlines())
    assert s.samples == 100
    main, pool = s.threads
    assert (main.name, main.share) == ("MainThread", 0.6)
    # a pool's threads are one line: their samples add up
    assert (pool.name, pool.share) == ("ThreadPoolExecutor-0", 0.4)
    assert main.top_self[0] == ("EpollSelector.select (selectors)", 0.5)
    assert dict(main.by_package) == {"selectors": 0.5, "faust": pytest.approx(1 / 3),
                                     "streams": pytest.approx(1 / 6)}
    assert dict(pool.by_package) == {"onnxruntime": 0.625, "serving": 0.375}


def test_top_limits_the_functions_but_not_the_packages() -> None:
    main = summarize(COLLAPSED.splitlines(), top=1).threads[0]
    assert len(main.top_self) == 1 and len(main.by_package) == 3


@pytest.mark.parametrize(("path", "package"), [
    ("faust/streams.py", "faust"),
    ("selectors.py", "selectors"),
    ("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/events.py", "asyncio"),
    ("/work/.venv/lib/python3.11/site-packages/redis/asyncio/connection.py", "redis"),
    ("/work/main/serving/index.py", "serving"),
    ("<string>", "<string>"),
])
def test_package_of_a_frame(path: str, package: str) -> None:
    assert package_of(path) == package


def test_an_empty_profile_has_no_threads() -> None:
    assert summarize([]).as_dict() == {"samples": 0, "threads": []}
