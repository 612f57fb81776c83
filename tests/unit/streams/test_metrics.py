"""Unit tests of :mod:`streams.prometheus`."""

from __future__ import annotations

import numpy as np
from prometheus_client import generate_latest

from serving.latency import bucket_counts, fields_from_prometheus, percentiles
from streams.prometheus import ConsumerLag, WorkerMetrics


def test_latency_histogram_round_trips_through_the_exposition_format() -> None:
    m = WorkerMetrics()
    a, b = np.array([0, 1, 1, 3, 24, 70]), np.array([900, 10**12])
    m.latency.add(a)
    m.latency.add(b)
    text = generate_latest(m.registry).decode()
    assert "streamrec_event_to_redis_seconds_count 8.0" in text
    assert 'streamrec_event_to_redis_seconds_bucket{le="0.025"} 5.0' in text
    assert fields_from_prometheus(text) == bucket_counts(np.concatenate([a, b]))
    assert percentiles(fields_from_prometheus(text))["p50"] == 3


def test_consumer_lag_is_high_watermark_minus_position_and_never_fails_a_scrape() -> None:
    m = WorkerMetrics()
    m.watch_consumer(lambda: {("clicks", 1): (120, 100), ("clicks", 0): (7, 9)})
    text = generate_latest(m.registry).decode()
    assert 'streamrec_consumer_lag_records{partition="1",topic="clicks"} 20.0' in text
    assert 'streamrec_consumer_lag_records{partition="0",topic="clicks"} 0.0' in text

    def broken() -> dict[tuple[str, int], tuple[int, int]]:
        raise RuntimeError("rebalancing")

    assert next(iter(ConsumerLag(broken).collect())).samples == []
