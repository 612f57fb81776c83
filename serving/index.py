"""FAISS item index wrapper. Row ``r`` of the index is item index ``r + 1``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np

from serving.topk import top_k_rows
from serving.vocab import PAD

_S = TypeVar("_S")


class SeenItems(AbstractSet[int]):
    """A user's seen item indexes: the keys of a count map its owner keeps (a cached
    session's, :mod:`serving.step_encoder`), and the same items as an int64 array for
    masking, built once and then kept up to date by the owner's :meth:`added` and
    :meth:`removed` rather than rebuilt from the map per event. Set operations give
    plain sets."""

    __slots__ = ("_array", "_counts")

    def __init__(self, counts: Mapping[int, int]) -> None:
        self._counts = counts
        self._array: np.ndarray | None = None

    def __contains__(self, x: object) -> bool:
        return x in self._counts

    def __iter__(self) -> Iterator[int]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    @classmethod
    def _from_iterable(cls, it: Iterable[_S]) -> AbstractSet[_S]:
        return set(it)

    def array(self) -> np.ndarray:
        """The items, int64, in no particular order."""
        if self._array is None:
            self._array = np.fromiter(self._counts, dtype=np.int64, count=len(self._counts))
        return self._array

    def added(self, items: Sequence[int]) -> None:
        """``items`` (not in the map before) are now in it."""
        if self._array is not None and items:
            self._array = np.concatenate((self._array, np.asarray(items, dtype=np.int64)))

    def removed(self) -> None:
        """Items left the map: the array is rebuilt on next use."""
        self._array = None


def seen_array(seen: AbstractSet[int]) -> np.ndarray:
    """``seen``'s items as an int64 array (a :class:`SeenItems` keeps its own)."""
    if isinstance(seen, SeenItems):
        return seen.array()
    return np.fromiter(seen, dtype=np.int64, count=len(seen))


class ItemIndex:
    """Maximum-inner-product search over item embeddings."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        # Exact indexes are scored densely (one BLAS product + an exact top-k that skips
        # seen items), which beats IndexFlat.search with the large k that seen-filtering
        # needs; approximate ones go through FAISS.
        self._dense = index.reconstruct_n(0, index.ntotal) if isinstance(index, faiss.IndexFlat) else None
        self._unit: np.ndarray | None = None
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()  # so vectors() can reconstruct (evaluation)

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

    def top_k_unseen(self, vecs: np.ndarray, k: int, seen: Sequence[AbstractSet[int]],
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indexes [B, k] (and scores) per user, excluding each user's ``seen``.

        Rows may end in PAD (0, score -inf) when fewer than ``k`` unseen items exist.
        """
        if self._dense is None:
            return self._search_then_filter(vecs, k, seen)
        scores = vecs @ self._dense.T  # (B, N)
        parts = [seen_array(s) for s in seen]
        if parts:
            rows = np.repeat(np.arange(len(parts)), [len(a) for a in parts])
            scores[rows, np.concatenate(parts) - 1] = -np.inf  # per item in C
        idx, top = top_k_rows(scores, min(k, self.size))
        return np.where(np.isneginf(top), PAD, idx + 1), top

    def _search_then_filter(self, vecs: np.ndarray, k: int, seen: Sequence[AbstractSet[int]],
                            ) -> tuple[np.ndarray, np.ndarray]:
        scores, items = self.search(vecs, k + max((len(s) for s in seen), default=0))
        out_i = np.zeros((len(vecs), k), dtype=np.int64)
        out_s = np.full((len(vecs), k), -np.inf, dtype=np.float32)
        for r, s in enumerate(seen):
            keep = [(i, v) for i, v in zip(items[r].tolist(), scores[r].tolist(), strict=True)
                    if i != PAD and i not in s][:k]
            if keep:
                out_i[r, :len(keep)], out_s[r, :len(keep)] = zip(*keep, strict=True)
        return out_i, out_s

    @property
    def unit_dense(self) -> np.ndarray | None:
        """:attr:`dense` with every row scaled to unit length (zero rows stay zero), for
        cosine similarity; computed on first use."""
        if self._unit is None and self._dense is not None:
            norms = np.linalg.norm(self._dense, axis=1, keepdims=True)
            self._unit = (self._dense / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return self._unit

    @property
    def dense(self) -> np.ndarray | None:
        """All vectors [N, D] of an exact index (row r = item r + 1); None for approximate."""
        return self._dense

    def vector(self, item: int) -> np.ndarray:
        """The vector of item index ``item`` (1-based)."""
        if self._dense is not None:
            return np.asarray(self._dense[item - 1])
        return np.asarray(self.index.reconstruct(item - 1))

    def vectors(self) -> np.ndarray:
        """All item vectors [N, D] (for exact full-catalogue scoring in evaluation)."""
        vecs: np.ndarray = self.index.reconstruct_n(0, self.size)
        return vecs


def build_flat_ip(item_vecs: np.ndarray) -> faiss.Index:
    """Exact inner-product index over ``item_vecs`` [N, D]."""
    index = faiss.IndexFlatIP(item_vecs.shape[1])
    index.add(np.ascontiguousarray(item_vecs, dtype=np.float32))
    return index


# From this many items on, "auto" builds an approximate index (IVF): below it exact
# search is fast enough (see docs/benchmarks.md, "Catalogue scaling"), above it exact
# search costs too much.
AUTO_APPROX_FROM = 100_000
INDEX_TYPES = ("flat_ip", "ivf_ip", "hnsw_ip")
HNSW_DEFAULTS = {"m": 32, "ef_construction": 80, "ef_search": 128}
IVF_NPROBE = 128  # lists scanned per query (measured: recall@100 >= 0.95 at 1M items)


def resolve_index_type(index_type: str, items: int) -> str:
    if index_type == "auto":
        return "ivf_ip" if items >= AUTO_APPROX_FROM else "flat_ip"
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type must be auto, {', '.join(INDEX_TYPES)}, not {index_type!r}")
    return index_type


def ivf_lists(items: int) -> int:
    """Inverted lists for a catalogue: about 4 sqrt(N) as a power of two (4,096 at 1M),
    at most 65,536 and with at least 39 items per list (k-means needs the points)."""
    return int(max(1, min(65_536, 2 ** round(np.log2(4 * np.sqrt(items))), items // 39)))


def build_index(item_vecs: np.ndarray, index_type: str, seed: int = 0) -> tuple[faiss.Index, dict[str, int]]:
    """The index a bundle ships, and the parameters the manifest records for it."""
    x = np.ascontiguousarray(item_vecs, dtype=np.float32)
    if index_type == "flat_ip":
        return build_flat_ip(x), {}
    if index_type == "ivf_ip":
        nlist = ivf_lists(len(x))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).permutation(len(x))[: 50 * nlist]  # k-means sample
        index.train(x[np.sort(sample)])
        index.add(x)
        return index, {"nlist": nlist, "nprobe": min(IVF_NPROBE, nlist)}
    p = dict(HNSW_DEFAULTS)
    hnsw = faiss.IndexHNSWFlat(x.shape[1], p["m"], faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = p["ef_construction"]
    hnsw.add(x)
    return hnsw, p


def configure(index: faiss.Index, index_type: str, params: dict[str, int]) -> bool:
    """Apply search-time parameters; False if the index is not of the declared type."""
    if index_type == "hnsw_ip":
        if not isinstance(index, faiss.IndexHNSW):
            return False
        index.hnsw.efSearch = int(params.get("ef_search", HNSW_DEFAULTS["ef_search"]))
        return True
    if index_type == "ivf_ip":
        if not isinstance(index, faiss.IndexIVFFlat):
            return False
        index.nprobe = int(params.get("nprobe", IVF_NPROBE))
        return True
    return isinstance(index, faiss.IndexFlat)
