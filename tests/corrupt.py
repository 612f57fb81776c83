"""Shared fixtures for corrupt bundles: each function breaks a copy of a valid bundle in one way.

``CASES`` lists (corruption, the check that must refuse it, the file it names); the unit tests
(:mod:`tests.unit.serving.test_bundle`) and the hot-swap integration test use the same list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import orjson
import torch

from serving.index import build_flat_ip
from streamrec.files import sha256_file
from training.export.bundle import export_onnx
from training.models.retrieval import SASRec, SASRecConfig


def rewrite_manifest(d: Path, edit: Callable[[dict[str, object]], None] = lambda m: None) -> None:
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


def vocab_not_json(d: Path) -> None:
    (d / "vocab.json").write_bytes(b'["a", "b"')
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
    (vocab_not_json, "vocab", "vocab.json"),
    (samples_truncated, "samples", "samples.npz"),
    (reference_shape_mismatch, "samples", "samples.npz"),
    (truncate_onnx, "onnx", "encoder.onnx"),
    (wrong_sha, "sha256", "popular.json"),
    (wrong_dimension, "dimension", "items.faiss"),
    (vocab_index_mismatch, "size", "items.faiss"),
    (nan_weights, "warm-up", "encoder.onnx"),
    (path_escape, "path", "../../etc/passwd"),
]

