"""Unit tests of :mod:`training.evaluation.ranking_metrics`."""

from __future__ import annotations

import math

import numpy as np

from training.evaluation.ranking_metrics import hr_ndcg, mask_history, ranks_from_scores


def test_ranks_hand_computed() -> None:
    scores = np.array([[0.0, 0.9, 0.5, 0.7, 0.1],
                       [0.0, 0.1, 0.2, 0.3, 0.4]])
    assert ranks_from_scores(scores, np.array([3, 1])).tolist() == [1, 3]


def test_ties_count_against_the_target() -> None:
    scores = np.array([[0.0, 1.0, 1.0, 1.0]])
    assert ranks_from_scores(scores, np.array([2])).tolist() == [2]


def test_hr_ndcg_hand_computed() -> None:
    m = hr_ndcg(np.array([0, 1, 4, 30]), ks=(1, 5))
    assert m["hr@1"] == 0.25 and m["hr@5"] == 0.75
    assert math.isclose(m["ndcg@5"], (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert math.isclose(m["ndcg@1"], 0.25)


def test_history_masking_removes_seen_items_and_pad() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    mask_history(scores, [[1, 2]])
    assert np.isneginf(scores[0, :3]).all()
    # target 3 was rank 3 (behind pad, 1, 2); with history masked it is first
    assert ranks_from_scores(scores, np.array([3])).tolist() == [0]


def test_target_in_history_is_a_miss() -> None:
    scores = np.array([[0.0, 4.0, 3.0, 2.0]])
    mask_history(scores, [[1]])
    assert ranks_from_scores(scores, np.array([1]))[0] >= 2

