import shutil
from pathlib import Path

import orjson
import pytest

from serving.bundle import load_bundle
from streamrec.errors import BundleRejected


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
