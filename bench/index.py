"""Catalogue scaling: exact inner-product search versus IVF and HNSW, 10k -> 1M items.

Item vectors are drawn from a Gaussian mixture of 1,000 clusters with varying
norms, like trained embeddings; queries from the same mixture. ``spread`` is
the within-cluster standard deviation (cluster centres have unit-variance
coordinates): 0.35 gives tight, well-separated clusters, 1.0 overlapping ones.
Recall@K is measured against the exact top-K of the flat index. The IVF index
is built by ``serving.index.build_index``, as bundles build it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from serving.index import build_index


@dataclass
class IndexResult:
    items: int
    index: str
    build_s: float
    p50_ms: float  # one query at a time
    p99_ms: float
    batch256_ms: float  # one call with 256 queries
    recall_at_k: float
    k: int

    def row(self) -> str:
        return (f"{self.items:>9,d} {self.index:22s} build {self.build_s:7.1f}s  single p50 "
                f"{self.p50_ms:6.2f} p99 {self.p99_ms:6.2f} ms  batch256 {self.batch256_ms:8.1f} ms  "
                f"recall@{self.k} {self.recall_at_k:.4f}")


def mixture(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray,
            spread: float = 0.35) -> np.ndarray:
    c = centers[rng.integers(0, len(centers), n)]
    x = c + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return (x * rng.uniform(0.5, 1.5, (n, 1))).astype(np.float32)


def _timings(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[float, float, float, np.ndarray]:
    single = []
    for q in queries[:500]:
        t = time.perf_counter()
        index.search(q[None, :], k)
        single.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    index.search(queries[:256], k)
    batch = (time.perf_counter() - t) * 1000
    _, all_ids = index.search(queries, k)
    return float(np.percentile(single, 50)), float(np.percentile(single, 99)), batch, all_ids


def run(sizes: list[int], dim: int = 64, k: int = 100, queries: int = 1000, m: int = 32,
        ef_construction: int = 80, ef_search: tuple[int, ...] = (64, 128, 256),
        nprobe: tuple[int, ...] = (32, 64, 128), spread: float = 0.35, hnsw: bool = True,
        seed: int = 0, on_result: Callable[[IndexResult], None] | None = None) -> list[IndexResult]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    q = mixture(queries, dim, rng, centers, spread)
    out: list[IndexResult] = []

    def add(r: IndexResult) -> None:
        out.append(r)
        if on_result:
            on_result(r)

    def recall(got: np.ndarray, exact: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact, strict=True)]))

    for n in sizes:
        x = mixture(n, dim, rng, centers, spread)
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        build = time.perf_counter() - t
        p50, p99, batch, exact = _timings(flat, q, k)
        add(IndexResult(n, "flat_ip (exact)", build, p50, p99, batch, 1.0, k))
        t = time.perf_counter()
        ivf, params = build_index(x, "ivf_ip", seed=seed)
        build = time.perf_counter() - t
        for probes in nprobe:
            probed = min(probes, params["nlist"])
            ivf.nprobe = probed  # type: ignore[attr-defined]
            p50, p99, batch, got = _timings(ivf, q, k)
            add(IndexResult(n, f"ivf_ip {params['nlist']} nprobe{probed}", build, p50, p99,
                            batch, recall(got, exact), k))
        if not hnsw:
            continue
        t = time.perf_counter()
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        build = time.perf_counter() - t
        for ef in ef_search:
            index.hnsw.efSearch = ef
            p50, p99, batch, got = _timings(index, q, k)
            add(IndexResult(n, f"hnsw_ip M{m} ef{ef}", build, p50, p99, batch, recall(got, exact), k))
    return out


def as_dict(results: list[IndexResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
