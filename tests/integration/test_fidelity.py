"""The fidelity check against real workers: identical lists and equal HR@10 on the plain
funnel, and an injected difference (a rule, a short session) reported with its cause."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.fidelity import RULE, SEEN_DEPTH, run
from streamrec.settings import Settings
from tests.integration.conftest import WorkerProc
from training.data.sequences import SequenceData, write_sequences

pytestmark = pytest.mark.integration
USERS = 60


def _data_file(tmp_path: Path, data: SequenceData) -> Path:
    path = tmp_path / "tiny.txt"
    write_sequences(path, data.users, [data.vocab.decode(s) for s in data.seqs])
    return path


def test_live_lists_equal_the_offline_funnel_and_hr_matches(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path, tiny_data: SequenceData, tmp_path: Path,
) -> None:
    s = make_settings()
    start_worker(s, tiny_bundle_dir).wait_ready()
    r = run(s, tiny_bundle_dir, _data_file(tmp_path, tiny_data), USERS, seed=1)
    assert r.users == USERS
    assert r.identical == USERS and r.online_vs_offline_funnel == {}, r.differences[:3]
    assert abs(r.online_hr10 - r.offline_hr10) <= 0.002, r.rows()
    assert r.funnel_vs_evaluator == {}, r.differences[:3]
    assert 0.0 < r.online_hr10 <= 1.0


def test_a_rule_only_the_worker_runs_is_reported_as_a_rule(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path, tiny_data: SequenceData, tmp_path: Path,
) -> None:
    worker = make_settings(rerank_pins="2:house-pick")
    start_worker(worker, tiny_bundle_dir).wait_ready()
    # the check runs with the worker's topics and prefix but without its rule
    checker = worker.model_copy(update={"rerank_pins": ""})
    r = run(checker, tiny_bundle_dir, _data_file(tmp_path, tiny_data), USERS, seed=1)
    assert r.identical == 0 and r.online_vs_offline_funnel == {RULE: USERS}, r.rows()
    assert all(d["online_cause"] == RULE and "pinned" in d["reasons"] for d in r.differences)
    assert r.funnel_vs_evaluator == {}


def test_a_session_shorter_than_the_history_is_the_seen_filter_depth(
    make_settings: Callable[..., Settings], start_worker: Callable[[Settings, Path], WorkerProc],
    tiny_bundle_dir: Path, tiny_data: SequenceData, tmp_path: Path,
) -> None:
    s = make_settings(session_max_len=4)
    start_worker(s, tiny_bundle_dir).wait_ready()
    r = run(s, tiny_bundle_dir, _data_file(tmp_path, tiny_data), USERS, seed=1)
    causes = {d["user"]: d["online_cause"] for d in r.differences if d["online_cause"]}
    assert causes and set(causes.values()) == {SEEN_DEPTH}, r.rows()
    assert all(d["history_len"] > 4 for d in r.differences if d["online_cause"])
    assert r.identical + len(causes) == USERS
