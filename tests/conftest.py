"""Shared fixtures: a tiny trained bundle (real SASRec, real ONNX export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.data.sequences import SequenceData
from training.data.synthetic import SyntheticSpec, generate
from training.models.train import TrainConfig
from training.pipeline import TrainReport, train_and_export

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


def _tiny_with_attributes(tmp_path_factory: pytest.TempPathFactory, data: SequenceData, name: str,
                          epochs: int, **kw: Any) -> Path:
    """The tiny model trained over the synthetic attributes (``kw``: train_and_export's)."""
    from training.data.attributes import build
    from training.data.synthetic import item_attributes

    mcfg = {"max_len": 20, "dim": 32, "layers": 1, "heads": 2, **kw.pop("mcfg", {})}
    return train_and_export(data, tmp_path_factory.mktemp("bundles") / name, mcfg,
                            TrainConfig(epochs=epochs, patience=epochs, batch_size=64, seed=1),
                            progress=False, attributes=build(item_attributes(TINY)), **kw).bundle


@pytest.fixture(scope="session")
def tiny_tower_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """The tiny model with an item tower over the synthetic attributes."""
    return _tiny_with_attributes(tmp_path_factory, tiny_data, "tiny-tower", 20,
                                 mcfg={"id_dropout": 0.5}, blend=False)


@pytest.fixture(scope="session")
def tiny_ranker_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """The tiny model with an item tower and a ranking stage over 50 candidates."""
    from training.models.ranker import RankerConfig

    return _tiny_with_attributes(tmp_path_factory, tiny_data, "tiny-ranker", 8,
                                 ranker=RankerConfig(candidates=50, epochs=8, patience=8),
                                 blend=False)


@pytest.fixture(scope="session")
def tiny_blend_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: SequenceData) -> Path:
    """The tiny model with an item tower and the content blend training chose."""
    return _tiny_with_attributes(tmp_path_factory, tiny_data, "tiny-blend", 8)
