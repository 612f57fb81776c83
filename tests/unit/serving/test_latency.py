"""Unit tests of :mod:`serving.latency`."""

from __future__ import annotations

import numpy as np


def test_latency_histogram_percentiles_are_conservative() -> None:
    from serving.latency import bucket_counts, diff, percentiles

    lags = np.array([0, 1, 1, 2, 3, 3, 3, 7, 19, 21, 120])
    fields = bucket_counts(lags)
    assert fields["lat_le_1"] == 3 and fields["lat_le_3"] == 3 and fields["lat_le_25"] == 1
    p = percentiles({k: str(v) for k, v in fields.items()})
    assert p["p50"] == 3 and p["max"] == 125 and p["count"] == 11
    later = {k: str(v * 2) for k, v in fields.items()}
    assert diff(later, {k: str(v) for k, v in fields.items()}) == fields
    assert bucket_counts(np.array([10**13, -5])) == {"lat_le_1000000000": 1, "lat_le_1": 1}

