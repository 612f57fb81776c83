"""Unit tests of :mod:`serving.vocab`."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.vocab import Vocabulary


def test_encode_decode_and_unknown_items() -> None:
    v = Vocabulary.build(["b", "a", "b", "c"])
    assert v.ids == ("b", "a", "c") and len(v) == 3
    assert v.encode(["a", "zzz", "c"]) == [2, 3]
    assert v.decode([3, 1]) == ["c", "b"]
    assert v.index("zzz") is None and "a" in v


def test_duplicates_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(("a", "a"))


def test_save_load(tmp_path: Path) -> None:
    v = Vocabulary(("x", "y"))
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == v
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="list of strings"):
        Vocabulary.load(tmp_path / "bad.json")

