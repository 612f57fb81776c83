"""The ranking stage's features (serving.ranking): the same code offline and in the worker."""

from __future__ import annotations

import numpy as np
import pytest

from serving.ranking import FEATURES, attribute_overlap, candidate_features, profiles_of


def test_features_are_score_gap_rank_popularity_and_overlap_with_padding_zeroed() -> None:
    scores = np.array([[3.0, 2.0, -np.inf]], dtype=np.float32)
    feats = candidate_features(scores, np.array([[1.5, 0.0, 9.0]]), np.array([[0.5, 1.0, 1.0]]))
    assert feats.shape == (1, 3, len(FEATURES))
    np.testing.assert_allclose(feats[0, 0], [3.0, 0.0, 0.0, 1.5, 0.5])
    np.testing.assert_allclose(feats[0, 1], [2.0, -1.0, np.log1p(1.0), 0.0, 1.0], rtol=1e-6)
    assert not feats[0, 2].any()  # padding: every feature 0, however big its popularity


def test_overlap_is_the_share_of_a_candidates_attributes_in_the_users_profile() -> None:
    # attribute vocabulary 1..4; item attrs: 1 -> {1, 2}, 2 -> {3}, 3 -> {} (none)
    item_attrs = np.array([[0, 0], [1, 2], [3, 0], [0, 0]])
    profiles = profiles_of([[1], [2, 3]], item_attrs, num_attrs=4)
    assert profiles.tolist() == [[False, True, True, False, False], [False, False, False, True, False]]
    cands = item_attrs[np.array([[1, 2, 3], [1, 2, 3]])]  # [B, K, A]
    np.testing.assert_allclose(attribute_overlap(profiles, cands), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_profiles_read_only_the_last_recent_items() -> None:
    item_attrs = np.array([[0], [1], [2], [3]])
    prof = profiles_of([[1, 2, 3]], item_attrs, num_attrs=3, recent=2)
    assert prof[0].tolist() == [False, False, True, True]


def test_without_attributes_overlap_is_zero() -> None:
    item_attrs = np.zeros((4, 0), dtype=np.int64)
    prof = profiles_of([[1, 2]], item_attrs, num_attrs=0)
    assert attribute_overlap(prof, item_attrs[np.array([[1, 2]])]).tolist() == [[0.0, 0.0]]


def test_scores_below_the_ranked_head_keep_their_spacing() -> None:
    from serving.ranking import ranked_rows

    inf = np.inf
    head = np.array([[-5.0, -3.0], [1.0, 2.0], [7.0, -inf]], dtype=np.float32)
    scores = np.array([[20.0, 19.0, 10.0, 8.0],  # the tail moves just under the head's lowest
                       [5.0, 4.0, -inf, -inf],  # nothing past the head
                       [3.0, -inf, -inf, -inf]], dtype=np.float32)  # one real candidate
    order, out = ranked_rows(head, scores)
    assert order.tolist() == [[1, 0, 2, 3], [1, 0, 2, 3], [0, 1, 2, 3]]
    assert out[0] == pytest.approx([-3.0, -5.0, -5.001, -7.001])
    assert out[1].tolist() == [2.0, 1.0, -inf, -inf]
    assert out[2].tolist() == [7.0, -inf, -inf, -inf]


def test_ranked_rows_keeps_ties_in_retrieval_order() -> None:
    from serving.ranking import ranked_rows

    order, _ = ranked_rows(np.zeros((1, 3), dtype=np.float32), np.array([[3.0, 2.0, 1.0]]))
    assert order.tolist() == [[0, 1, 2]]
