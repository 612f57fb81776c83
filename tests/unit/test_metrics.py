import math

import numpy as np

from training.evaluate import popularity_ranks
from training.metrics import hr_ndcg, mask_history, ranks_from_scores


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


def test_popularity_ranks() -> None:
    counts = np.array([0, 10, 5, 1])
    ranks = popularity_ranks(counts, [[1], []], np.array([2, 3]))
    assert ranks.tolist() == [0, 2]


def test_sampled_protocol_is_deterministic_and_excludes_history() -> None:
    from training.evaluate import sampled_ranks

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
    from training.evaluate import sampled_candidates

    cands = sampled_candidates([[1, 2, 3]], np.array([4]), num_items=10, seed=0)
    row = cands[0]
    assert row[0] == 4 and sorted(row[1:7].tolist()) == [5, 6, 7, 8, 9, 10]
    assert (row[7:] == 0).all()


def test_latency_histogram_percentiles_are_conservative() -> None:
    from serving.latency import bucket_counts, diff, percentiles

    lags = np.array([0, 1, 1, 2, 3, 3, 3, 7, 19, 21, 120])
    fields = bucket_counts(lags)
    assert fields["lat_le_1"] == 3 and fields["lat_le_3"] == 3 and fields["lat_le_25"] == 1
    p = percentiles({k: str(v) for k, v in fields.items()})
    assert p["p50"] == 3 and p["max"] == 125 and p["count"] == 11
    later = {k: str(v * 2) for k, v in fields.items()}
    assert diff(later, {k: str(v) for k, v in fields.items()}) == fields
    assert bucket_counts(np.array([10**13, -5])) == {"lat_le_1000000000": 1, "lat_le_1": 1}
