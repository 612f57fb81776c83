"""The session-length rows of ``streamrec bench-funnel`` (:mod:`bench.funnel`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.funnel import histories, run_lengths
from serving.bundle import load_bundle


def test_histories_of_a_fixed_length_hold_exactly_that_many_known_items(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    hs = histories(bundle, 5, np.random.default_rng(0), length=7)
    assert [len(h) for h in hs] == [7] * 5
    assert all(i in set(bundle.vocab.ids) for h in hs for i in h)
    free = histories(bundle, 50, np.random.default_rng(0))
    assert 1 <= min(map(len, free)) and max(map(len, free)) <= bundle.max_len


def test_each_session_length_is_timed_on_its_own_batches(tiny_bundle_dir: Path) -> None:
    seen: list[str] = []
    results = run_lengths(tiny_bundle_dir, [2, 5], batch=4, batches=3,
                          on_result=lambda r: seen.append(r.config))
    # a bundle with a step model: each length with every window encoded whole, then by steps
    assert seen == ["whole window, length 2", "step, length 2", "whole window, length 5", "step, length 5"]
    assert [(r.batch, r.batches) for r in results] == [(4, 3)] * 4
    assert all(0 < r.ms_per_batch_p50 <= r.ms_per_batch_p99 and r.us_per_user > 0 for r in results)
