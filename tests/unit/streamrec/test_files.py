"""Unit tests of :mod:`streamrec.files`: a directory appears whole or not at all."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from streamrec.files import atomic_directory, sha256_file


def test_a_new_directory_appears_with_everything_in_it(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
        assert not target.exists()  # nothing visible while it is written
    assert (target / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no temporary left behind


def test_replace_swaps_the_old_directory_out(tmp_path: Path) -> None:
    target = tmp_path / "current"
    with atomic_directory(target) as tmp:
        (tmp / "old").write_text("x")
    with atomic_directory(target) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["current"]


def test_an_error_leaves_the_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "current"
    with atomic_directory(target) as tmp:
        (tmp / "good").write_text("g")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "half").write_text("h")
        raise RuntimeError("export failed")
    assert sorted(p.name for p in target.iterdir()) == ["good"]
    assert [p.name for p in tmp_path.iterdir()] == ["current"]


def test_without_replace_an_existing_directory_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    with atomic_directory(target, replace=False) as tmp:
        (tmp / "first").write_text("1")
    with atomic_directory(target, replace=False) as tmp:
        (tmp / "second").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["first"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "f"
    data = bytes(range(256)) * 5000  # more than one read chunk
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
