"""Shared fixtures: a tiny trained bundle (real SASRec, real ONNX export)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import SequenceData
from training.pipeline import TrainReport, train_and_export
from training.synthetic import SyntheticSpec, generate
from training.train import TrainConfig

TINY = SyntheticSpec(users=300, items=120, clusters=12, mean_len=12, seed=3)


@pytest.fixture(scope="session")
def tiny_data() -> SequenceData:
    return generate(TINY)


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> TrainReport:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return train_and_export(tiny_data, out, {"max_len": 20, "dim": 32, "layers": 1, "heads": 2},
                            TrainConfig(epochs=8, patience=8, batch_size=64, seed=1), progress=False)


@pytest.fixture(scope="session")
def tiny_bundle_dir(tiny_report: TrainReport) -> Path:
    return tiny_report.bundle


@pytest.fixture(scope="session")
def tiny_bundle_b(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """A second version of the same model (other seed): a different version string."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-b"
    return train_and_export(tiny_data, out, {"max_len": 20, "dim": 32, "layers": 1, "heads": 2},
                            TrainConfig(epochs=3, patience=3, batch_size=64, seed=2),
                            progress=False).bundle


@pytest.fixture(scope="session")
def tiny_tower_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """The tiny model with an item tower over the synthetic attributes."""
    from training.attributes import build
    from training.synthetic import item_attributes

    out = tmp_path_factory.mktemp("bundles") / "tiny-tower"
    return train_and_export(tiny_data, out, {"max_len": 20, "dim": 32, "layers": 1, "heads": 2,
                                             "id_dropout": 0.5},
                            TrainConfig(epochs=20, patience=20, batch_size=64, seed=1),
                            progress=False, attributes=build(item_attributes(TINY)),
                            blend=False).bundle


@pytest.fixture(scope="session")
def tiny_ranker_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """The tiny model with an item tower and a ranking stage over 50 candidates."""
    from training.attributes import build
    from training.ranker import RankerConfig
    from training.synthetic import item_attributes

    out = tmp_path_factory.mktemp("bundles") / "tiny-ranker"
    return train_and_export(tiny_data, out, {"max_len": 20, "dim": 32, "layers": 1, "heads": 2},
                            TrainConfig(epochs=8, patience=8, batch_size=64, seed=1),
                            progress=False, attributes=build(item_attributes(TINY)),
                            ranker=RankerConfig(candidates=50, epochs=8, patience=8),
                            blend=False).bundle


@pytest.fixture(scope="session")
def tiny_blend_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """The tiny model with an item tower and the content blend training chose."""
    from training.attributes import build
    from training.synthetic import item_attributes

    out = tmp_path_factory.mktemp("bundles") / "tiny-blend"
    return train_and_export(tiny_data, out, {"max_len": 20, "dim": 32, "layers": 1, "heads": 2},
                            TrainConfig(epochs=8, patience=8, batch_size=64, seed=1),
                            progress=False, attributes=build(item_attributes(TINY))).bundle
