"""The synthetic world the simulator's users follow: the generator's own transitions, and
``generate`` unchanged by exposing them."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from training.data.synthetic import SyntheticSpec, generate, world

# generate(spec).fingerprint() before the world was factored out of generate (commit 0f66857)
BEFORE = [
    (SyntheticSpec(), "df72c921751de5449dfa38df20d9cb3ed2ba780d4ee823ef86c5c2ef13560097"),
    (SyntheticSpec(users=300, items=120, clusters=12, mean_len=12, seed=3),
     "23d439924a3cecefd95654925dc0d90e37f1c52b8be0b3c46cd4baf8d193f593"),
    # more clusters than items: empty clusters borrow a random item
    (SyntheticSpec(users=50, items=40, clusters=60, seed=11),
     "6645fa7103dcc8443528750505206946be0067ae4b7ea29b73271606ba0ec81c"),
]


@pytest.mark.parametrize(("spec", "fingerprint"), BEFORE)
def test_generate_is_unchanged(spec: SyntheticSpec, fingerprint: str) -> None:
    assert generate(spec).fingerprint() == fingerprint


@pytest.mark.parametrize("spec", [s for s, _ in BEFORE])
def test_next_probabilities_are_a_distribution_over_all_items(spec: SyntheticSpec) -> None:
    w = world(spec)
    for item in range(spec.items):
        p = w.next_probabilities(item)
        assert p.shape == (spec.items,)
        assert (p > 0).all()  # the popularity share reaches every item
        assert p.sum() == pytest.approx(1.0, abs=1e-9)


def test_next_probabilities_are_what_generate_walks() -> None:
    """Over generate's transitions, the world's probability of the observed next item and the
    share of path steps agree with what the data shows."""
    spec = SyntheticSpec(users=3000, items=200, clusters=10, seed=5)
    data, w = generate(spec), world(spec)
    expected_path, observed_path, n = 0.0, 0, 0
    expected_count: np.ndarray = np.zeros(spec.items)
    observed_count: np.ndarray = np.zeros(spec.items)
    for seq in data.seqs:
        ids = [int(x) - 1 for x in data.vocab.decode(seq)]
        for a, b in pairwise(ids):
            p = w.next_probabilities(a)
            m = w.members[int(w.cluster_of[a])]
            succ = int(m[(w.position[a] + 1) % len(m)])
            expected_path += p[succ]
            observed_path += b == succ
            expected_count += p
            observed_count[b] += 1
            n += 1
    assert n > 20_000
    # a binomial share over n transitions: 5 standard errors of slack at most
    assert abs(observed_path / n - expected_path / n) < 5 * np.sqrt(0.25 / n)
    assert expected_path / n > spec.p_next  # the path step carries p_next and a popularity share
    # the next items' frequencies follow the predicted ones (total variation distance)
    tv = 0.5 * np.abs(observed_count / n - expected_count / n).sum()
    assert tv < 0.05
