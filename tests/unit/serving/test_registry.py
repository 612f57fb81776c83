"""Unit tests of :mod:`serving.registry`."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.bundle import QualityGate, load_bundle
from serving.registry import BundleStore, load_announced
from streamrec.errors import BundleRejected


def test_announcement_must_match_the_manifest(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    a = store.publish(tiny_bundle_dir)
    assert load_announced(a, 1, QualityGate(), None).version == a.version
    forged = type(a)(a.version, a.uri, "0" * 64, a.published_at)
    with pytest.raises(BundleRejected, match="announcement"):
        load_announced(forged, 1, QualityGate(), None)


def test_store_publish_is_idempotent_and_lists_versions(tiny_bundle_dir: Path, tiny_bundle_b: Path,
                                                        tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    a1, a2 = store.publish(tiny_bundle_dir), store.publish(tiny_bundle_dir)
    assert a1.version == a2.version and a1.manifest_sha256 == a2.manifest_sha256
    b = store.publish(tiny_bundle_b)
    assert {m.version for m in store.versions()} == {a1.version, b.version}
    assert load_bundle(store.path(b.version)).version == b.version

