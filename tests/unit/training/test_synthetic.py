"""Unit tests of :mod:`training.data.synthetic`."""

from __future__ import annotations

from training.data.synthetic import SyntheticSpec, generate


def test_synthetic_is_deterministic() -> None:
    spec = SyntheticSpec(users=50, items=40, clusters=5)
    assert generate(spec).fingerprint() == generate(spec).fingerprint()
    assert generate(spec).fingerprint() != generate(SyntheticSpec(users=50, items=40, clusters=5, seed=8)).fingerprint()

