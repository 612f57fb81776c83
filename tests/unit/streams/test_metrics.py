"""Unit tests of :mod:`streams.prometheus`."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
from aiokafka.errors import KafkaError
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from serving.latency import bucket_counts, fields_from_prometheus, percentiles
from serving.online import OnlineMetrics
from streams.batch import DeadLetter, Record
from streams.prometheus import DEAD_LETTER_KINDS, ConsumerLag, WorkerMetrics
from streams.retry import retry_transient
from streams.worker import ClickWorker


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


def test_stage_histograms_count_per_event_and_per_batch_times_once_per_event() -> None:
    m = WorkerMetrics()
    m.stages.add("delivery", np.array([3.0, 12.5, 40.0]))
    m.stages.add_batch("compute", 6.2, events=3)  # one batch of three events
    m.stages.add_batch("redis", 1.0, events=0)  # a batch with nothing to write counts nothing
    text = generate_latest(m.registry).decode()
    assert 'streamrec_event_stage_seconds_count{stage="delivery"} 3.0' in text
    assert 'streamrec_event_stage_seconds_count{stage="compute"} 3.0' in text
    assert 'streamrec_event_stage_seconds_count{stage="redis"} 0.0' in text
    assert 'streamrec_event_stage_seconds_sum{stage="compute"} 0.0186' in text
    name = "streamrec_event_stage_seconds"
    assert fields_from_prometheus(text, name, {"stage": "delivery"}) == bucket_counts(
        np.array([3.0, 12.5, 40.0]))
    assert fields_from_prometheus(text, name, {"stage": "compute"}) == {"lat_le_7": 3}
    # the end-to-end histogram is not mixed in, and an unknown stage has no counts
    assert fields_from_prometheus(text) == {}
    assert fields_from_prometheus(text, name, {"stage": "nope"}) == {}


def test_consumer_lag_is_high_watermark_minus_position_and_never_fails_a_scrape() -> None:
    m = WorkerMetrics()
    m.watch_consumer(lambda: {("clicks", 1): (120, 100), ("clicks", 0): (7, 9)})
    text = generate_latest(m.registry).decode()
    assert 'streamrec_consumer_lag_records{partition="1",topic="clicks"} 20.0' in text
    assert 'streamrec_consumer_lag_records{partition="0",topic="clicks"} 0.0' in text

    def broken() -> dict[tuple[str, int], tuple[int, int]]:
        raise RuntimeError("rebalancing")

    assert next(iter(ConsumerLag(broken).collect())).samples == []


def families(m: WorkerMetrics) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}


def test_names_follow_the_conventions_counters_total_and_units_in_names() -> None:
    m = WorkerMetrics()
    m.watch_online(OnlineMetrics(10), lambda: ("v1", 5))
    fams = families(m)
    ours = {n: f for n, f in fams.items() if n.startswith("streamrec_")}
    for name, f in ours.items():
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), name
        if f.type == "histogram":
            assert name.endswith(("_seconds", "_records")), name
    # running counts are counters, not gauges
    assert ours["streamrec_changelog_applied"].type == "counter"
    assert "streamrec_batch_size_records" in ours and "streamrec_batch_size" not in ours
    # the standard collectors the default registry has
    assert {"process_cpu_seconds", "process_resident_memory_bytes",
            "python_gc_collections", "python_info"} <= set(fams)


def test_changelog_counter_reads_the_tables_running_count_at_scrape_time() -> None:
    m = WorkerMetrics()
    assert families(m)["streamrec_changelog_applied"].samples[0].value == 0
    applied = [41]
    m.watch_changelog(lambda: applied[0])
    applied[0] += 1
    (sample,) = [s for s in families(m)["streamrec_changelog_applied"].samples
                 if s.name == "streamrec_changelog_applied_total"]
    assert sample.value == 42


def test_redis_retries_are_counted_by_operation() -> None:
    m = WorkerMetrics()

    def retries() -> dict[str, float]:
        return {s.labels["operation"]: s.value
                for s in families(m)["streamrec_redis_retries"].samples}

    before = retries()
    assert {"list_write", "fencing_epoch", "status_report"} <= set(before)
    fails = [RedisConnectionError("down")] * 3

    async def flaky() -> str:
        if fails:
            raise fails.pop()
        return "ok"

    assert asyncio.run(retry_transient(flaky, first_delay=0.001, what="fencing epoch")) == "ok"
    after = retries()
    assert after["fencing_epoch"] - before["fencing_epoch"] == 3
    assert after["list_write"] == before["list_write"]


class FailingDlq:
    """A dead-letter topic whose first ``failures`` sends raise."""

    def __init__(self, failures: int) -> None:
        self.failures, self.sent = failures, 0

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        if self.failures:
            self.failures -= 1
            raise KafkaError("broker unreachable")
        self.sent += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def get_topic_name(self) -> str:
        return "clicks-dlq"


def test_dead_letter_write_failures_are_counted() -> None:
    m = WorkerMetrics()
    dlq = FailingDlq(failures=2)
    reported: list[dict[str, object]] = []
    status = SimpleNamespace(report=reported.append)
    ctx = SimpleNamespace(dlq=dlq, status=status, worker_id="w1", dead_letter_max_bytes=8192,
                          metrics=m)
    dead = [DeadLetter(Record(b"u1", b"{", "clicks", 0, 7), "bad json", "malformed_json")]
    asyncio.run(ClickWorker(ctx).dead_letter(dead))  # type: ignore[arg-type]
    assert dlq.sent == 1
    (total,) = [s.value for s in families(m)["streamrec_dead_letter_write_failures"].samples
                if s.name.endswith("_total")]
    assert total == 2
    assert reported[-1] == {"dead_letter_blocked": ""}


def test_the_served_models_creation_time_is_exported_once_there_is_one() -> None:
    m = WorkerMetrics()
    assert families(m)["streamrec_model_created_timestamp_seconds"].samples == []
    created: list[str | None] = ["2026-12-01T10:00:00Z"]
    m.watch_model(lambda: created[0])
    (s,) = families(m)["streamrec_model_created_timestamp_seconds"].samples
    assert s.value == 1_796_119_200
    created[0] = "2026-12-01T10:00:00.5+00:00"
    assert families(m)["streamrec_model_created_timestamp_seconds"].samples[0].value == 1_796_119_200.5


def test_every_dead_letter_kind_is_exported_at_zero_before_the_first() -> None:
    m = WorkerMetrics()
    kinds = {s.labels["reason"]: s.value for s in families(m)["streamrec_dead_lettered"].samples
             if s.name.endswith("_total")}
    assert set(kinds) == set(DEAD_LETTER_KINDS) and not any(kinds.values())
    assert {"malformed_json", "invalid_event", "no_key"} <= set(kinds)


def test_times_ahead_of_the_workers_clock_count_as_zero_and_never_lower_a_sum() -> None:
    """A producer's clock ahead of the worker's gives negative lags: counted in the first
    bucket at 0, where they made the histograms' sums go down."""
    m = WorkerMetrics()
    m.latency.add(np.array([5, -3_600_000]))
    m.stages.add("delivery", np.array([2.0, -86_400_000.0]))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
    lat = {s.name: s.value for s in families["streamrec_event_to_redis_seconds"].samples
           if not s.labels.get("le")}
    assert lat["streamrec_event_to_redis_seconds_count"] == 2
    assert lat["streamrec_event_to_redis_seconds_sum"] == 0.005
    stage = {s.name: s.value for s in families["streamrec_event_stage_seconds"].samples
             if s.labels.get("stage") == "delivery" and not s.labels.get("le")}
    assert stage["streamrec_event_stage_seconds_count"] == 2
    assert stage["streamrec_event_stage_seconds_sum"] == 0.002
