"""List metrics (training.evaluation.list_metrics) on hand-made lists, and the λ table's direction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.list_metrics import lambda_table, list_metrics

# items 1..4: 1 and 2 share everything, 3 shares half with 1, 4 has nothing in common
ATTRS = np.array([[0, 0], [1, 2], [1, 2], [1, 3], [4, 0]])


def test_hits_diversity_coverage_and_novelty_of_hand_made_lists() -> None:
    lists = np.array([[1, 2], [3, 4]])
    targets = np.array([2, 1])  # user 0 finds it second, user 1 not at all
    users_per_item = np.array([0, 4, 2, 1, 0])
    m = list_metrics(lists, targets, ATTRS, users_per_item, num_users=4)
    assert m["hr@2"] == 0.5
    assert m["ndcg@2"] == pytest.approx(0.5 / math.log2(3))
    # list 0: Jaccard(1, 2) = 1 -> distance 0; list 1: Jaccard(3, 4) = 0 -> distance 1
    assert m["diversity"] == pytest.approx(0.5)
    assert m["coverage"] == 1.0  # every one of the 4 items is listed somewhere
    # -log2 p: item 1 p=1 -> 0; item 2 p=1/2 -> 1; item 3 p=1/4 -> 2; item 4 unseen -> p=1/4 -> 2
    assert m["novelty"] == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_empty_slots_are_not_items() -> None:
    m = list_metrics(np.array([[1, 0]]), np.array([4]), ATTRS, np.array([0, 1, 1, 1, 1]), 1)
    assert m["hr@2"] == 0.0 and m["coverage"] == 0.25 and m["diversity"] == 0.0


def test_a_lower_lambda_buys_diversity_with_relevance() -> None:
    # one user, candidates by relevance: 1, 2 (a copy of 1), 3, 4; target = 2
    idx = np.array([[1, 2, 3, 4]])
    scores = np.array([[4.0, 3.9, 1.0, 0.5]], dtype=np.float32)
    vecs = np.eye(4, dtype=np.float32)
    rows = lambda_table(idx, scores, vecs, np.array([2]), ATTRS, np.ones(5, np.int64), [1.0, 0.3],
                        n=2)
    plain, diverse = rows
    assert plain["hr@2"] == 1.0 and plain["diversity"] == 0.0
    assert diverse["hr@2"] == 0.0 and diverse["diversity"] == 1.0
