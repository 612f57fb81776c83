"""Unit tests of :mod:`serving.bundle`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import orjson
import pytest

from serving.bundle import QualityGate, load_bundle
from streamrec.errors import BundleRejected
from tests.corrupt import CASES, rewrite_manifest


@pytest.fixture
def bundle_copy(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle_dir, dst)
    return dst


def test_valid_bundle_loads(tiny_bundle_dir: Path) -> None:
    b = load_bundle(tiny_bundle_dir)
    assert b.index.size == len(b.vocab) == b.manifest.num_items
    assert b.index.dim == b.manifest.dim == 32
    assert set(b.manifest.files) >= {"encoder.onnx", "items.faiss", "vocab.json"}


def test_sha_mismatch_is_rejected_naming_the_file(bundle_copy: Path) -> None:
    with (bundle_copy / "vocab.json").open("ab") as f:
        f.write(b" ")
    with pytest.raises(BundleRejected, match=r"vocab.json sha256: mismatch") as e:
        load_bundle(bundle_copy)
    assert e.value.check == "sha256"


def test_missing_file_is_rejected(bundle_copy: Path) -> None:
    (bundle_copy / "items.faiss").unlink()
    with pytest.raises(BundleRejected, match=r"items.faiss files: missing"):
        load_bundle(bundle_copy)


def test_manifest_path_outside_bundle_is_rejected(bundle_copy: Path) -> None:
    m = orjson.loads((bundle_copy / "manifest.json").read_bytes())
    m["files"]["../escape.txt"] = "0" * 64
    (bundle_copy / "manifest.json").write_bytes(orjson.dumps(m))
    with pytest.raises(BundleRejected, match=r"path: escapes the bundle directory"):
        load_bundle(bundle_copy)


def test_bad_manifest_is_rejected(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_bytes(b'{"version": 3}')
    with pytest.raises(BundleRejected, match="manifest"):
        load_bundle(bundle_copy)


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


@pytest.mark.parametrize("kind", ["hnsw_ip", "ivf_ip"])
def test_approximate_bundle_serves_and_a_mislabelled_index_is_refused(
        tiny_bundle_dir: Path, tmp_path: Path, kind: str) -> None:
    from serving.funnel import recommend
    from serving.index import build_index

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

