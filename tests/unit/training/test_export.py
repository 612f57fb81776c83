"""Unit tests of :mod:`training.export.bundle`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serving.bundle import load_bundle
from serving.encoder import Encoder, make_session
from serving.manifest import REFERENCE_ATOL
from training.export.bundle import ExportError, check_parity
from training.models.retrieval import SASRec, SASRecConfig
from training.pipeline import TrainReport


def test_parity_check_rejects_a_different_model(tiny_report: TrainReport) -> None:
    cfg = SASRecConfig(**{k: v for k, v in load_bundle(tiny_report.bundle).manifest.model_config.items()
                          if k != "train"})
    torch.manual_seed(123)
    other = SASRec(cfg).eval()
    enc = Encoder(make_session(tiny_report.bundle / "encoder.onnx"))
    seqs = np.arange(1, 2 * cfg.max_len + 1, dtype=np.int64).reshape(2, cfg.max_len) % cfg.num_items + 1
    with pytest.raises(ExportError, match="disagree"):
        check_parity(other, enc, seqs)


def test_lowpass_bundle_exports_with_parity(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    r = train_and_export(tiny_data, tmp_path / "lp", {"max_len": 20, "dim": 16, "layers": 2,
                                                      "lowpass": 0.7},
                         TrainConfig(epochs=1, patience=1, batch_size=64), progress=False)
    assert r.manifest.metrics["onnx_parity_max_abs_diff"] <= REFERENCE_ATOL
    assert r.manifest.model_config["lowpass"] == 0.7
    assert load_bundle(tmp_path / "lp").manifest.version == r.manifest.version


def test_post_norm_bundle_exports_its_encoder_and_step_model_with_parity(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from serving.step_encoder import STEP_FILES
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    r = train_and_export(tiny_data, tmp_path / "post", {"max_len": 20, "dim": 16, "layers": 2,
                                                        "lowpass": 0.5, "norm": "post"},
                         TrainConfig(epochs=1, patience=1, batch_size=64), progress=False)
    assert r.manifest.metrics["onnx_parity_max_abs_diff"] <= REFERENCE_ATOL
    assert r.manifest.model_config["norm"] == "post"
    assert all((tmp_path / "post" / f).exists() for f in STEP_FILES)
    assert load_bundle(tmp_path / "post", cache_mb=64.0).step is not None


def test_bidirectional_bundle_has_no_step_model_and_serves_its_encoder(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from serving.step_encoder import STEP_FILES
    from training.export.bundle import export_step_models
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    r = train_and_export(tiny_data, tmp_path / "bi", {"max_len": 20, "dim": 16, "layers": 2, "causal": False,
                                                      "lowpass": 0.5, "lowpass_freqs": 4},
                         TrainConfig(epochs=1, patience=1, batch_size=64, samples="prefixes"), progress=False)
    assert r.manifest.metrics["onnx_parity_max_abs_diff"] <= REFERENCE_ATOL
    assert r.manifest.model_config["causal"] is False and r.manifest.model_config["lowpass_freqs"] == 4
    assert not any((tmp_path / "bi" / f).exists() for f in STEP_FILES)
    b = load_bundle(tmp_path / "bi", cache_mb=64.0)
    assert b.step is None
    from training.export.bundle import export_onnx

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=30, max_len=20, dim=16, causal=False, lowpass=0.5,
                                lowpass_freqs=4)).eval()
    export_onnx(model, tmp_path / "bi.onnx")
    enc = Encoder(make_session(tmp_path / "bi.onnx"))
    seqs = np.zeros((2, 20), dtype=np.int64)
    seqs[0, -3:], seqs[1, -12:] = [1, 2, 3], np.arange(4, 16)
    for L in (20, 12, 5):  # the graph reads any window length as torch does
        rows = seqs[:, -L:] if L >= 12 else seqs[:1, -L:]
        with torch.no_grad():
            want = model(torch.from_numpy(rows)).numpy()
        assert np.abs(enc.encode(rows) - want).max() <= REFERENCE_ATOL, L
    model = SASRec(SASRecConfig(num_items=10, max_len=8, dim=16, causal=False))
    with pytest.raises(ExportError, match="needs causal attention"):
        export_step_models(model, tmp_path, [[1, 2, 3]])


def test_onnx_encoder_accepts_any_length_up_to_max_len(tiny_bundle_dir: Path) -> None:
    b = load_bundle(tiny_bundle_dir)
    full = np.zeros((2, b.max_len), dtype=np.int64)
    full[0, -3:], full[1, -1:] = [1, 2, 3], [4]
    assert np.allclose(b.encoder.encode(full), b.encoder.encode(full[:, -3:]), atol=1e-5)



def test_item_tower_bundle_has_its_tower_attributes_and_parity(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort
    import orjson

    from tests.conftest import TINY
    from training.data.attributes import build
    from training.data.synthetic import item_attributes
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    attrs = build(item_attributes(TINY))
    r = train_and_export(tiny_data, tmp_path / "tower", {"max_len": 20, "dim": 16, "layers": 1,
                                                         "id_dropout": 0.3},
                         TrainConfig(epochs=2, patience=2, batch_size=64), progress=False,
                         attributes=attrs)
    m = r.manifest
    assert m.model_config["attributes"] == attrs.size and m.model_config["max_attrs"] == 3
    assert m.metrics["item_tower_parity_max_abs_diff"] <= REFERENCE_ATOL
    assert {"item_tower.onnx", "attributes.json"} <= set(m.files)
    bundle = load_bundle(tmp_path / "tower")  # the worker loads it as any bundle
    saved = orjson.loads((tmp_path / "tower" / "attributes.json").read_bytes())
    assert saved["tokens"] == list(attrs.tokens)
    first = bundle.vocab.ids[0]
    assert saved["items"][first] == list(attrs.of[first])
    # the tower embeds attributes into the index's space: an item's own attributes give a
    # vector that scores like (not equal to: the ID part is missing) the item
    session = ort.InferenceSession(str(tmp_path / "tower" / "item_tower.onnx"),
                                   providers=["CPUExecutionProvider"])
    rows = attrs.matrix(bundle.vocab.ids, 3)[1:4]
    vecs = session.run(None, {"item_attrs": rows})[0]
    assert vecs.shape == (3, 16) and np.isfinite(vecs).all()
