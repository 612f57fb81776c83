"""Unit tests of :mod:`training.evaluation.evaluate`."""

from __future__ import annotations

import numpy as np

from training.evaluation.evaluate import popularity_ranks


def test_popularity_ranks() -> None:
    counts = np.array([0, 10, 5, 1])
    ranks = popularity_ranks(counts, [[1], []], np.array([2, 3]))
    assert ranks.tolist() == [0, 2]


def test_sampled_protocol_is_deterministic_and_excludes_history() -> None:
    from training.evaluation.evaluate import sampled_ranks

    rng = np.random.default_rng(0)
    item_vecs = rng.normal(size=(300, 8)).astype(np.float32)
    encode = lambda seqs: item_vecs[np.maximum(seqs[:, -1], 1) - 1]
    inputs = [[1, 2, 3], [4, 5], [7]]
    targets = np.array([10, 20, 30])
    a = sampled_ranks(encode, item_vecs, inputs, targets, 5, seed=3)
    b = sampled_ranks(encode, item_vecs, inputs, targets, 5, seed=3)
    assert a.tolist() == b.tolist() and (a >= 0).all() and (a <= 100).all()
    # a perfect scorer (target vector = user vector, others orthogonal-ish) ranks first
    perfect = np.eye(300, 300, dtype=np.float32)
    enc2 = lambda seqs: perfect[np.array([9, 19, 29])[: len(seqs)]]
    assert sampled_ranks(enc2, perfect, inputs, targets, 5, seed=1).tolist() == [0, 0, 0]


def test_sampled_candidates_on_a_tiny_catalogue_terminate_and_pad() -> None:
    from training.evaluation.evaluate import sampled_candidates

    cands = sampled_candidates([[1, 2, 3]], np.array([4]), num_items=10, seed=0)
    row = cands[0]
    assert row[0] == 4 and sorted(row[1:7].tolist()) == [5, 6, 7, 8, 9, 10]
    assert (row[7:] == 0).all()

