"""Item vocabulary: external item id (str) <-> dense model index.

Index 0 is reserved for padding; real items are 1..N. Row ``i`` of the FAISS
index holds item index ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streamrec.sequences import PAD

__all__ = ["PAD", "Vocabulary"]


@dataclass(frozen=True)
class Vocabulary:
    """Immutable two-way mapping. ``ids[k]`` is the external id of index ``k + 1``."""

    ids: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {item: i + 1 for i, item in enumerate(self.ids)}
        if len(index) != len(self.ids):
            raise ValueError("vocabulary has duplicate item ids")
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, items: Iterable[str]) -> Vocabulary:
        """Vocabulary in first-seen order of ``items``."""
        return cls(tuple(dict.fromkeys(items)))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def index(self, item: str) -> int | None:
        """Model index of ``item``, or None when the model has never seen it."""
        return self._index.get(item)

    def encode(self, items: Iterable[str]) -> list[int]:
        """Indexes of the known items, unknown ones dropped, order kept."""
        return list(filter(None, map(self._index.get, items)))  # indexes are >= 1: None alone drops

    def decode(self, indexes: Sequence[int]) -> list[str]:
        ids = self.ids
        return [ids[i - 1] for i in indexes]

    def save(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(list(self.ids)))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"{path.name}: expected a JSON list of strings")
        return cls(tuple(data))
