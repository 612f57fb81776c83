"""Datasets as per-user item sequences, and the leave-one-out split.

Two input formats:

* sequence files (``../shared/data/*.txt``): ``user item item …`` per line, time order;
* MovieLens ``ratings.dat``: ``user::item::rating::timestamp``, sorted by time per user.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.vocab import Vocabulary
from streamrec.errors import DataError


@dataclass(frozen=True)
class SequenceData:
    """Users' sequences as item indexes (1..N) over ``vocab``."""

    name: str
    users: list[str]
    seqs: list[list[int]]
    vocab: Vocabulary

    @property
    def num_items(self) -> int:
        return len(self.vocab)

    @property
    def num_interactions(self) -> int:
        return sum(map(len, self.seqs))

    def fingerprint(self) -> str:
        """sha256 of the content (users, sequences as external ids), order-sensitive."""
        h = hashlib.sha256()
        for u, s in zip(self.users, self.seqs, strict=True):
            h.update(u.encode() + b"\t" + " ".join(self.vocab.decode(s)).encode() + b"\n")
        return h.hexdigest()

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "users": len(self.users), "items": self.num_items,
                "interactions": self.num_interactions, "fingerprint": self.fingerprint()}


def from_id_sequences(name: str, users: Sequence[str], seqs: Sequence[Sequence[str]]) -> SequenceData:
    """Build a dataset from external ids; the vocabulary is sorted (numerically where possible)."""
    items = {i for s in seqs for i in s}
    vocab = Vocabulary(tuple(sorted(items, key=_natural)))
    return SequenceData(name, list(users), [vocab.encode(s) for s in seqs], vocab)


def _natural(x: str) -> tuple[int, int | str]:
    return (0, int(x)) if x.isdigit() else (1, x)


def load_sequences(path: Path) -> SequenceData:
    users, seqs = [], []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected 'user item [item …]', got {line.strip()!r}")
            users.append(parts[0])
            seqs.append(parts[1:])
    if not users:
        raise DataError(f"{path}: no sequences")
    return from_id_sequences(path.stem, users, seqs)


def load_movielens(path: Path, min_rating: float = 0.0) -> SequenceData:
    events: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with path.open(encoding="latin-1") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split("::")
            if len(parts) != 4:
                raise DataError(f"{path}:{n}: expected 'user::item::rating::timestamp'")
            user, item, rating, ts = parts
            try:
                if float(rating) >= min_rating:
                    events[user].append((int(ts), item))
            except ValueError:
                raise DataError(f"{path}:{n}: rating and timestamp must be numbers") from None
    if not events:
        raise DataError(f"{path}: no ratings")
    users = sorted(events, key=_natural)
    # stable sort by time keeps file order for equal timestamps
    seqs = [[i for _, i in sorted(events[u], key=lambda e: e[0])] for u in users]
    return from_id_sequences(path.stem, users, seqs)


def load_dataset(path: Path | str) -> SequenceData:
    """Sequence file or MovieLens ``ratings.dat``, detected from the first line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    with p.open(encoding="latin-1") as f:
        first = f.readline()
    return load_movielens(p) if "::" in first else load_sequences(p)


def write_sequences(path: Path, users: Sequence[str], seqs: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for u, s in zip(users, seqs, strict=True):
            f.write(f"{u} {' '.join(s)}\n")


@dataclass(frozen=True)
class Split:
    """Leave-one-out split over item indexes.

    ``train[u]`` is everything but the last two items. Validation predicts
    ``valid_target[u]`` from ``train[u]``; test predicts ``test_target[u]`` from
    ``train[u] + [valid_target[u]]``. Users with fewer than 3 items only train.
    """

    data: SequenceData
    train: list[list[int]]
    eval_users: np.ndarray  # indexes into train
    valid_target: np.ndarray
    test_target: np.ndarray

    def inputs(self, split: str) -> list[list[int]]:
        """Input sequences for the evaluated users of ``split`` ("valid" or "test")."""
        if split == "valid":
            return [self.train[u] for u in self.eval_users]
        if split == "test":
            return [self.train[u] + [int(v)] for u, v in zip(self.eval_users, self.valid_target,
                                                              strict=True)]
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")

    def targets(self, split: str) -> np.ndarray:
        return self.valid_target if split == "valid" else self.test_target


def without_last_items(data: SequenceData) -> SequenceData:
    """Every sequence without its last item (the test target): run on this, a protocol's
    test targets are the real validation items, so settings chosen on it never saw the
    test split (``streamrec cold-start --tune``)."""
    return SequenceData(data.name, data.users, [s[:-1] for s in data.seqs], data.vocab)


def leave_one_out(data: SequenceData) -> Split:
    train, users, valid, test = [], [], [], []
    for u, s in enumerate(data.seqs):
        if len(s) >= 3:
            train.append(s[:-2])
            users.append(u)
            valid.append(s[-2])
            test.append(s[-1])
        else:
            train.append(list(s))
    return Split(data, train, np.array(users, dtype=np.int64), np.array(valid, dtype=np.int64),
                 np.array(test, dtype=np.int64))


def item_counts(seqs: Sequence[Sequence[int]], num_items: int) -> np.ndarray:
    """Interaction count per item index, shape [num_items + 1] (index 0 = PAD = 0)."""
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for s in seqs:
        np.add.at(counts, np.asarray(s, dtype=np.int64), 1)
    counts[0] = 0
    return counts
