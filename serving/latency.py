"""A fixed-bucket latency histogram (ms), cheap to update per batch and to merge in Redis.

Buckets are 1 ms wide up to 20 ms, then coarser. A percentile is reported as
the upper edge of the bucket that reaches it: never optimistic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EDGES = np.array([*range(1, 21), 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500,
                  750, 1000, 1500, 2000, 3000, 5000, 10_000, 30_000, 60_000, 10**9], dtype=np.int64)
FIELD = "lat_le_"  # Redis hash field prefix: lat_le_{upper edge}


def bucket_counts(lags_ms: np.ndarray) -> dict[str, int]:
    """Histogram fields for a batch of latencies: {"lat_le_5": n, …} (non-zero buckets only)."""
    # lags beyond the last edge (clock skew, replayed old events) land in the last bucket
    idx = np.minimum(np.searchsorted(EDGES, np.maximum(lags_ms, 0), side="left"), len(EDGES) - 1)
    counts = np.bincount(idx, minlength=len(EDGES))
    return {f"{FIELD}{EDGES[i]}": int(c) for i, c in enumerate(counts) if c}


def percentiles(fields: Mapping[str, str | int], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Percentiles (upper bucket edges) and max edge from a status hash's histogram fields."""
    counts = np.zeros(len(EDGES), dtype=np.int64)
    for k, v in fields.items():
        if k.startswith(FIELD):
            counts[np.searchsorted(EDGES, int(k.removeprefix(FIELD)))] += int(v)
    total = counts.sum()
    if not total:
        return {}
    cum = np.cumsum(counts)
    out = {f"p{q:g}": float(EDGES[np.searchsorted(cum, total * q / 100.0)]) for q in qs}
    out["max"] = float(EDGES[np.flatnonzero(counts)[-1]])
    out["count"] = float(total)
    return out


def diff(after: Mapping[str, str], before: Mapping[str, str]) -> dict[str, int]:
    """Histogram fields of ``after`` minus ``before`` (a measurement window)."""
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items() if k.startswith(FIELD)}
