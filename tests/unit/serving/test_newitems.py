"""The new-item slot's choice by key (serving.new_item_slot): profiles, item columns, keys."""

from __future__ import annotations

import numpy as np
import pytest

from serving.new_item_slot import (
    CONTENT_DECAY,
    CONTENT_WINDOW,
    IDF_POWER,
    attribute_df,
    content_profiles,
    item_columns,
    new_item_keys,
    rarity_weights,
)


def test_a_profile_weighs_recent_items_more_and_is_a_weighted_mean() -> None:
    # oldest first: [0, 1], then [1], then [2] (the newest, weight 1)
    got = content_profiles([[[0, 1], [1], [2]], [], [[1, 1]]], width=3)
    d = CONTENT_DECAY
    total = 1 + d + d * d
    np.testing.assert_allclose(got[0], [d * d / total, (d + d * d) / total, 1 / total], rtol=1e-6)
    assert not got[1].any()  # no history: no profile
    np.testing.assert_allclose(got[2], [0, 1, 0])  # a repeated attribute counts once per item


def test_an_item_without_attributes_dilutes_the_profile_and_old_items_do_not_count() -> None:
    got = content_profiles([[[0], []]], width=1)
    assert got[0, 0] == pytest.approx(CONTENT_DECAY / (1 + CONTENT_DECAY))
    long = [[1]] + [[0]] * CONTENT_WINDOW  # attribute 1 only on an item past the window
    assert content_profiles([long], width=2)[0, 1] == 0.0


def test_item_columns_are_one_hot_over_the_root_of_their_count() -> None:
    got = item_columns([[0, 2], [1, 1], []], width=3)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(got, [[s, 0, s], [0, 1, 0], [0, 0, 0]], rtol=1e-6)


def test_the_key_is_the_score_over_the_user_norm_plus_the_weighted_overlap() -> None:
    scores = np.array([[6.0, 3.0, -np.inf]], dtype=np.float32)
    users = np.array([[3.0, 4.0]], dtype=np.float32)  # |u| = 5
    np.testing.assert_allclose(new_item_keys(scores, users), [[1.2, 0.6, -np.inf]])
    profiles = np.array([[0.0, 1.0]], dtype=np.float32)
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    got = new_item_keys(scores, users, 2.0, profiles, items)
    np.testing.assert_allclose(got, [[1.2, 2.6, -np.inf]])  # the overlap decides; -inf stays
    with pytest.raises(ValueError, match="profiles"):
        new_item_keys(scores, users, 1.0)


def test_an_attribute_weighs_by_its_rarity_in_the_catalogue() -> None:
    # 9 catalogue items with attributes: column 0 on all, 1 on 3, 2 on 1, 3 on none (new only)
    items = [[0]] * 5 + [[0, 1]] * 2 + [[0, 1, 2]] + [[0, 0]]
    df = attribute_df(items, width=4)
    assert df.tolist() == [9, 3, 1, 0]  # an attribute counts once per item
    got = rarity_weights(df, catalogue=9)
    want = [np.log(10 / (1 + d)) ** IDF_POWER for d in (9, 3, 1, 0)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == 0.0 and got[1] < got[2] < got[3]  # on every item: says nothing
    # weighted columns: the rarity times the one-hot over the root of the count
    np.testing.assert_allclose(item_columns([[1, 2]], 4, got)[0],
                               [0, got[1] / np.sqrt(2), got[2] / np.sqrt(2), 0], rtol=1e-6)
    # no catalogue with attributes: nothing is known of rarity, every attribute weighs 1
    np.testing.assert_array_equal(rarity_weights(np.zeros(3, dtype=np.int64), 0), [1, 1, 1])


def test_a_shared_rare_attribute_outweighs_a_shared_common_one() -> None:
    """Two new items score alike by vector; the user's history holds a common attribute (a
    category) and a rare one (a brand); the item with the rare one is the key's choice."""
    scores = np.array([[1.0, 1.0]], dtype=np.float32)
    users = np.array([[1.0, 0.0]], dtype=np.float32)
    profiles = content_profiles([[[0, 1]]], width=2)  # category 0, brand 1
    weights = rarity_weights(np.array([500, 3]), catalogue=1000)
    plain = new_item_keys(scores, users, 1.0, profiles, item_columns([[0], [1]], 2))
    assert plain[0, 0] == plain[0, 1]  # by plain overlap, a tie
    keys = new_item_keys(scores, users, 1.0, profiles, item_columns([[0], [1]], 2, weights))
    assert keys[0, 1] > keys[0, 0]
