"""Every kind of broken bundle is refused with the check that caught it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import orjson
import pytest
import torch

from serving.bundle import QualityGate, load_bundle
from serving.index import build_flat_ip
from serving.registry import BundleStore, load_announced
from streamrec.errors import BundleRejected
from streamrec.files import sha256_file
from training.export import export_onnx
from training.model import SASRec, SASRecConfig


def rewrite_manifest(d: Path, edit: Callable[[dict], None] = lambda m: None) -> None:
    """Apply ``edit`` to the manifest and refresh every file's sha256 (so only the
    check under test can fail)."""
    m = orjson.loads((d / "manifest.json").read_bytes())
    edit(m)
    m["files"] = {k: (sha256_file(d / k) if (d / k).is_file() else v) for k, v in m["files"].items()}
    (d / "manifest.json").write_bytes(orjson.dumps(m))


def truncate_onnx(d: Path) -> None:
    data = (d / "encoder.onnx").read_bytes()
    (d / "encoder.onnx").write_bytes(data[: len(data) // 2])
    rewrite_manifest(d)


def wrong_sha(d: Path) -> None:
    with (d / "popular.json").open("ab") as f:
        f.write(b" ")


def wrong_dimension(d: Path) -> None:
    n = faiss.read_index(str(d / "items.faiss")).ntotal
    faiss.write_index(build_flat_ip(np.ones((n, 16), np.float32)), str(d / "items.faiss"))
    rewrite_manifest(d)


def vocab_index_mismatch(d: Path) -> None:
    ids = orjson.loads((d / "vocab.json").read_bytes())
    (d / "vocab.json").write_bytes(orjson.dumps(ids + ["one-too-many"]))
    rewrite_manifest(d)


def nan_weights(d: Path) -> None:
    m = orjson.loads((d / "manifest.json").read_bytes())
    cfg = SASRecConfig(**{k: v for k, v in m["model_config"].items() if k != "train"})
    model = SASRec(cfg).eval()
    with torch.no_grad():
        model.ln_f.weight.fill_(float("nan"))
    export_onnx(model, d / "encoder.onnx")
    rewrite_manifest(d)


def path_escape(d: Path) -> None:
    rewrite_manifest(d, lambda m: m["files"].update({"../../etc/passwd": "0" * 64}))


def popular_not_json(d: Path) -> None:
    (d / "popular.json").write_bytes(b"[1, 2,")
    rewrite_manifest(d)


def samples_truncated(d: Path) -> None:
    data = (d / "samples.npz").read_bytes()
    (d / "samples.npz").write_bytes(data[: len(data) // 3])
    rewrite_manifest(d)


def reference_shape_mismatch(d: Path) -> None:
    with np.load(d / "samples.npz") as z:
        seqs, vecs = z["seqs"], z["vecs"]
    np.savez(d / "samples.npz", seqs=seqs, vecs=vecs[:, :-1])
    rewrite_manifest(d)


CASES = [
    (popular_not_json, "popular", "popular.json"),
    (samples_truncated, "samples", "samples.npz"),
    (reference_shape_mismatch, "samples", "samples.npz"),
    (truncate_onnx, "onnx", "encoder.onnx"),
    (wrong_sha, "sha256", "popular.json"),
    (wrong_dimension, "dimension", "items.faiss"),
    (vocab_index_mismatch, "size", "items.faiss"),
    (nan_weights, "warm-up", "encoder.onnx"),
    (path_escape, "path", "../../etc/passwd"),
]


@pytest.mark.parametrize(("corrupt", "check", "path"), CASES, ids=[c[0].__name__ for c in CASES])
def test_corrupt_bundle_is_refused(tiny_bundle_dir: Path, tmp_path: Path,
                                   corrupt: Callable[[Path], None], check: str, path: str) -> None:
    d = tmp_path / "b"
    shutil.copytree(tiny_bundle_dir, d)
    corrupt(d)
    with pytest.raises(BundleRejected) as e:
        load_bundle(d)
    assert e.value.check == check and e.value.path == path, str(e.value)


def test_missing_bundle_directory_is_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(BundleRejected) as e:
        load_bundle(tmp_path / "nowhere")
    assert e.value.check == "manifest" and e.value.path == "manifest.json"


def test_announcement_must_match_the_manifest(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    a = store.publish(tiny_bundle_dir)
    assert load_announced(a, 1, QualityGate(), None).version == a.version
    forged = type(a)(a.version, a.uri, "0" * 64, a.published_at)
    with pytest.raises(BundleRejected, match="announcement"):
        load_announced(forged, 1, QualityGate(), None)


def test_quality_gate(tiny_bundle_dir: Path, tiny_bundle_b: Path) -> None:
    a, b = load_bundle(tiny_bundle_dir), load_bundle(tiny_bundle_b)
    score_a = a.manifest.metrics["valid"]["full"]["ndcg@10"]
    score_b = b.manifest.metrics["valid"]["full"]["ndcg@10"]
    QualityGate(min_valid_ndcg=min(score_a, score_b)).check(b, a)
    with pytest.raises(BundleRejected, match="below the floor"):
        QualityGate(min_valid_ndcg=score_b + 0.01).check(b, a)
    worse, better = (b, a) if score_b < score_a else (a, b)
    with pytest.raises(BundleRejected, match="below the current"):
        QualityGate(max_ndcg_drop=0.0).check(worse, better)


def test_store_publish_is_idempotent_and_lists_versions(tiny_bundle_dir: Path, tiny_bundle_b: Path,
                                                        tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    a1, a2 = store.publish(tiny_bundle_dir), store.publish(tiny_bundle_dir)
    assert a1.version == a2.version and a1.manifest_sha256 == a2.manifest_sha256
    b = store.publish(tiny_bundle_b)
    assert {m.version for m in store.versions()} == {a1.version, b.version}
    assert load_bundle(store.path(b.version)).version == b.version


@pytest.mark.parametrize("kind", ["hnsw_ip", "ivf_ip"])
def test_approximate_bundle_serves_and_a_mislabelled_index_is_refused(
        tiny_bundle_dir: Path, tmp_path: Path, kind: str) -> None:
    from serving.index import build_index
    from serving.recommend import recommend

    d = tmp_path / kind
    shutil.copytree(tiny_bundle_dir, d)
    exact = load_bundle(d)
    index, params = build_index(exact.index.vectors(), kind)
    if kind == "ivf_ip":  # scan every list: the tiny catalogue's answer must then be exact
        params["nprobe"] = params["nlist"]
    faiss.write_index(index, str(d / "items.faiss"))
    rewrite_manifest(d, lambda m: m.update(index_type=kind, index_params=params))
    b = load_bundle(d)
    if kind == "hnsw_ip":
        assert b.index.index.hnsw.efSearch == params["ef_search"]
    else:
        assert b.index.index.nprobe == params["nlist"]
        assert np.allclose(b.index.vectors(), exact.index.vectors())
    h = [list(b.vocab.ids[:5])]
    assert recommend(b, h, 10)[0].items == recommend(exact, h, 10)[0].items  # tiny catalogue: exact
    rewrite_manifest(d, lambda m: m.update(index_type="flat_ip", index_params={}))
    with pytest.raises(BundleRejected, match="manifest says flat_ip"):
        load_bundle(d)
