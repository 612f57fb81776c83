"""Item content: each item's attribute tokens (categories, brand, tags), for the item tower.

Two input formats:

* ``item2attributes.json`` (the benchmark data's, ``../shared/data/*_item2attributes.json``):
  ``{"item id": [attribute id, …], …}``;
* a text file, one item per line: ``item<TAB>attr attr …`` (attributes separated by
  spaces, ``|`` or commas): for any other catalogue.

Attribute tokens are strings; the vocabulary maps them to 1..A (0 pads). Items
without attributes have an empty list: their vector is their ID embedding alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamrec.errors import DataError

MAX_ATTRS = 16  # attributes kept per item (Beauty: at most 10, LastFM tags: more)
_SPLIT = re.compile(r"[\s|,]+")


@dataclass(frozen=True)
class ItemAttributes:
    """``tokens``: the attribute vocabulary (index = position + 1); ``of``: item id → tokens."""

    tokens: tuple[str, ...]
    of: Mapping[str, tuple[str, ...]]

    @property
    def size(self) -> int:
        return len(self.tokens)

    def index(self) -> dict[str, int]:
        return {t: i + 1 for i, t in enumerate(self.tokens)}

    def matrix(self, items: Sequence[str], max_attrs: int) -> np.ndarray:
        """(len(items) + 1, max_attrs) int64: row ``i`` holds the attribute indexes of
        ``items[i - 1]`` (row 0 = padding), 0-padded; unknown tokens are dropped."""
        return encode_rows(self.index(), [self.of.get(i, ()) for i in items], max_attrs, pad_row=True)

    def coverage(self, items: Iterable[str]) -> float:
        items = list(items)
        return sum(1 for i in items if self.of.get(i)) / max(len(items), 1)

    def to_json(self, items: Sequence[str]) -> bytes:
        """The bundle's ``attributes.json``: the vocabulary and each catalogue item's tokens."""
        return orjson.dumps({"tokens": list(self.tokens),
                             "items": {i: list(self.of[i]) for i in items if self.of.get(i)}})


def encode_rows(index: Mapping[str, int], rows: Sequence[Sequence[str]], max_attrs: int,
                pad_row: bool = False) -> np.ndarray:
    """Attribute token lists → a 0-padded (rows, max_attrs) int64 matrix (first ``max_attrs``
    known tokens of each row); ``pad_row`` prepends an all-zero row 0."""
    out = np.zeros((len(rows) + int(pad_row), max_attrs), dtype=np.int64)
    for r, tokens in enumerate(rows, start=int(pad_row)):
        known = [index[t] for t in tokens if t in index][:max_attrs]
        out[r, :len(known)] = known
    return out


def build(of: Mapping[str, Sequence[str]], min_count: int = 1) -> ItemAttributes:
    """An :class:`ItemAttributes` over ``of``; tokens seen on fewer than ``min_count`` items
    are dropped (sorted by frequency, then name, for a stable vocabulary)."""
    counts = Counter(t for tokens in of.values() for t in set(tokens))
    tokens = tuple(sorted((t for t, c in counts.items() if c >= min_count),
                          key=lambda t: (-counts[t], t)))
    keep = set(tokens)
    return ItemAttributes(tokens, {str(i): tuple(dict.fromkeys(t for t in ts if t in keep))
                                   for i, ts in of.items()})


def load_attributes(path: Path, min_count: int = 1) -> ItemAttributes:
    """Read ``path`` (JSON item → attribute list, or ``item<TAB>attrs`` lines)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read attributes {path}: {e}") from None
    if path.suffix == ".json":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise DataError(f"{path}: not JSON ({e})") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise DataError(f"{path}: expected an object of item id -> list of attributes")
        return build({str(k): [str(a) for a in v] for k, v in data.items()}, min_count)
    of: dict[str, list[str]] = {}
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        item, _, rest = line.partition("\t")
        if not rest:
            raise DataError(f"{path}:{n}: expected 'item<TAB>attributes'")
        of[item.strip()] = [t for t in _SPLIT.split(rest.strip()) if t]
    return build(of, min_count)
