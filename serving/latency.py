"""A fixed-bucket latency histogram (ms): the edges the worker exports, and percentiles of it.

Buckets are 1 ms wide up to 20 ms, then coarser. A percentile is reported as
the upper edge of the bucket that reaches it: never optimistic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EDGES = np.array([*range(1, 21), 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500,
                  750, 1000, 1500, 2000, 3000, 5000, 10_000, 30_000, 60_000, 10**9], dtype=np.int64)
FIELD = "lat_le_"  # Redis hash field prefix: lat_le_{upper edge}


def bucket_array(lags_ms: np.ndarray) -> np.ndarray:
    """Counts per bucket (``len(EDGES)``) of a batch of latencies in ms."""
    # lags beyond the last edge (clock skew, replayed old events) land in the last bucket
    idx = np.minimum(np.searchsorted(EDGES, np.maximum(lags_ms, 0), side="left"), len(EDGES) - 1)
    return np.bincount(idx, minlength=len(EDGES))


def bucket_index(ms: float) -> int:
    """The bucket of one latency in ms (as :func:`bucket_array` would place it)."""
    return min(int(np.searchsorted(EDGES, max(ms, 0), side="left")), len(EDGES) - 1)


def bucket_counts(lags_ms: np.ndarray) -> dict[str, int]:
    """Histogram fields for a batch of latencies: {"lat_le_5": n, …} (non-zero buckets only)."""
    return {f"{FIELD}{EDGES[i]}": int(c) for i, c in enumerate(bucket_array(lags_ms)) if c}


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


def fields_from_prometheus(text: str, name: str = "streamrec_event_to_redis_seconds",
                           labels: Mapping[str, str] | None = None) -> dict[str, int]:
    """The histogram fields (``lat_le_{ms}``) of a Prometheus histogram in exposition text.

    The worker exports its latency histogram with these edges (in seconds) at
    ``/metrics`` (:mod:`streams.prometheus`); this turns it back into per-bucket counts,
    so a benchmark can take windows (``diff``) and ``percentiles`` of it. ``labels``: the
    series of a labelled histogram (``{"stage": "compute"}``).
    """
    from prometheus_client.parser import text_string_to_metric_families

    cumulative: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()):
                le = sample.labels["le"]
                edge = int(EDGES[-1]) if le == "+Inf" else round(float(le) * 1000)
                cumulative[edge] = sample.value
    out, below = {}, 0.0
    for edge in sorted(cumulative):
        n = int(cumulative[edge] - below)
        below = cumulative[edge]
        if n:
            out[f"{FIELD}{edge}"] = n
    return out


def scrape(address: str, timeout_s: float = 2.0, token: str | None = None) -> str:
    """The ``/metrics`` text of the worker whose HTTP port is at ``address`` (``host:port``),
    sending ``token`` as a bearer token where the worker needs one (``STREAMREC_WEB_TOKENS``)."""
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{address}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as r:
        text: str = r.read().decode()
        return text


def scrape_fields(address: str, timeout_s: float = 2.0, token: str | None = None) -> dict[str, int]:
    """The latency histogram fields of the worker whose HTTP port is at ``address``
    (``host:port``), read from its ``/metrics``."""
    return fields_from_prometheus(scrape(address, timeout_s, token))


def diff(after: Mapping[str, str | int], before: Mapping[str, str | int]) -> dict[str, int]:
    """Histogram fields of ``after`` minus ``before`` (a measurement window)."""
    return {k: int(v) - int(before.get(k, 0)) for k, v in after.items() if k.startswith(FIELD)}
