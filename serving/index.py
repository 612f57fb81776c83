"""FAISS item index wrapper. Row ``r`` of the index is item index ``r + 1``."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


class ItemIndex:
    """Maximum-inner-product search over item embeddings."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    @classmethod
    def load(cls, path: Path) -> ItemIndex:
        return cls(faiss.read_index(str(path)))

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores [B, k] float32, item indexes [B, k] int64; 0 where fewer exist)."""
        k = min(k, self.size)
        scores, rows = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
        return scores, rows + 1  # -1 (no result) becomes PAD

    def vectors(self) -> np.ndarray:
        """All item vectors [N, D] (for exact full-catalogue scoring in evaluation)."""
        return self.index.reconstruct_n(0, self.size)


def build_flat_ip(item_vecs: np.ndarray) -> faiss.Index:
    """Exact inner-product index over ``item_vecs`` [N, D]."""
    index = faiss.IndexFlatIP(item_vecs.shape[1])
    index.add(np.ascontiguousarray(item_vecs, dtype=np.float32))
    return index
