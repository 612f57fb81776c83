"""The worker's Prometheus metrics (served at ``/metrics`` by :mod:`streams.web`).

One registry per worker process. Counters and histograms are updated per batch
by :class:`streams.worker.ClickWorker`, swaps and refusals by
:mod:`streams.hotswap`; consumer lag, the changelog records read and the Redis
retries (:mod:`streams.retry`) are read at scrape time. The event → Redis
latency histogram is kept as bucket counts in numpy (``serving.latency.EDGES``,
in ms) and added per batch in one call, not one ``observe`` per event.

The names follow Prometheus's conventions: running counts are counters
(``_total``), and a name ends in its unit (``_seconds``, ``_records``, ``_ratio``).
The registry also carries the standard ``process_*``, ``python_gc_*`` and
``python_info`` collectors. ``promtool check metrics`` passes on a live
worker's ``/metrics`` (tests/integration/test_metrics_lint.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from serving.latency import EDGES, bucket_array, bucket_index
from serving.online import COUNTERS, COVERAGE, HITS, KS, PREFIX, WINS, WITHOUT_LIST, OnlineMetrics
from streams import retry

# (topic, partition) -> (high watermark, position): what a lag gauge needs
LagSource = Callable[[], Mapping[tuple[str, int], tuple[int, int]]]


class LatencyHistogram(Collector):
    """``streamrec_event_to_redis_seconds``: event time → its list acknowledged by Redis.
    An event time ahead of the worker's clock counts as 0: a negative observation would
    make the histogram's sum go down, which no rate over it survives."""

    name = "streamrec_event_to_redis_seconds"

    def __init__(self) -> None:
        self.counts = np.zeros(len(EDGES), dtype=np.int64)
        self.sum_ms = 0

    def add(self, lags_ms: np.ndarray) -> None:
        lags_ms = np.maximum(lags_ms, 0)
        self.counts += bucket_array(lags_ms)
        self.sum_ms += int(lags_ms.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, "Event time to the Redis write of its list, seconds",
                                    buckets=_buckets(self.counts), sum_value=self.sum_ms / 1000)


def _buckets(counts: np.ndarray) -> list[tuple[str, int]]:
    """Per-bucket counts over ``EDGES`` as Prometheus's cumulative (``le`` in seconds) buckets."""
    cum = np.cumsum(counts)
    buckets = [(f"{edge / 1000:g}", int(c)) for edge, c in zip(EDGES[:-1], cum[:-1], strict=True)]
    buckets.append(("+Inf", int(cum[-1])))
    return buckets


# The stages of an event's way to Redis, in order (docs/operations.md, "Where the latency goes").
STAGES = ("delivery", "batching", "apply", "compute", "redis")


class StageLatency(Collector):
    """``streamrec_event_stage_seconds{stage}``: each consumed event's time in each stage
    on its way to Redis, with the buckets of the end-to-end histogram:

    - ``delivery``: the record's timestamp (the producer's send) → the worker's event
      loop has it (producer linger, broker, fetch wait, the consumer thread's hand-over);
    - ``batching``: → its micro-batch is taken (the batch window, earlier batches);
    - ``apply``: the batch applied to session state (the fencing check included);
    - ``compute``: the batch's lists computed (waiting for the compute thread included);
    - ``redis``: the batch's Redis write, until acknowledged.

    Batch stages count once per event of the batch, so every stage's percentiles are
    over events, like the end-to-end histogram's. Updated once per batch (numpy). A
    negative time (a record timestamp ahead of the worker's clock) counts as 0.
    """

    name = "streamrec_event_stage_seconds"

    def __init__(self) -> None:
        self.counts = {s: np.zeros(len(EDGES), dtype=np.int64) for s in STAGES}
        self.sums_ms = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, ms: np.ndarray) -> None:
        """Per-event times in ``stage`` (ms)."""
        ms = np.maximum(ms, 0)
        self.counts[stage] += bucket_array(ms)
        self.sums_ms[stage] += float(ms.sum())

    def add_batch(self, stage: str, ms: float, events: int) -> None:
        """One batch's time in ``stage`` (ms), for each of its ``events``."""
        if events:
            self.counts[stage][bucket_index(ms)] += events
            self.sums_ms[stage] += ms * events

    def collect(self) -> Iterator[HistogramMetricFamily]:
        h = HistogramMetricFamily(self.name, "Time each consumed event spent in each stage on "
                                  "its way to Redis, seconds", labels=["stage"])
        for stage in STAGES:
            h.add_metric([stage], _buckets(self.counts[stage]), self.sums_ms[stage] / 1000)
        yield h


class ConsumerLag(Collector):
    """``streamrec_consumer_lag_records{topic,partition}``: high watermark minus position."""

    def __init__(self, source: LagSource) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("streamrec_consumer_lag_records",
                              "Records in the partition not yet consumed by this worker",
                              labels=["topic", "partition"])
        try:
            positions = self.source()
        except Exception:  # noqa: BLE001 - a scrape during a rebalance shows no lag, never fails
            positions = {}
        for (topic, partition), (high, pos) in sorted(positions.items()):
            g.add_metric([topic, str(partition)], max(0, high - pos))
        yield g


class ChangelogApplied(Collector):
    """``streamrec_changelog_applied_total``: changelog records read into the session table
    (a running count kept by :mod:`streams.tables`, read at scrape time)."""

    def __init__(self) -> None:
        self.source: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "streamrec_changelog_applied", "Changelog records read into the session table "
            "since start (recovery and standbys; with the rocksdb store, only the tail a "
            "restart missed)", value=self.source())


class ModelCreated(Collector):
    """``streamrec_model_created_timestamp_seconds``: when the served bundle was made (its
    manifest's ``created_at``); absent before the first bundle. Alerts on a stale model."""

    def __init__(self) -> None:
        self.source: Callable[[], str | None] = lambda: None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("streamrec_model_created_timestamp_seconds", "When the served "
                              "bundle was made (its manifest's created_at), Unix time")
        created = self.source()
        if created:
            g.add_metric([], _unix_seconds(created))
        yield g


def _unix_seconds(iso: str) -> float:
    from datetime import UTC, datetime

    t = datetime.fromisoformat(iso)  # Python 3.11 reads a "Z" suffix
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


class RedisRetries(Collector):
    """``streamrec_redis_retries_total{operation}``: transient Redis failures retried
    (:func:`streams.retry.retry_transient`, process-wide), by operation."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        c = CounterMetricFamily("streamrec_redis_retries", "Redis operations retried after a "
                                "transient failure (Redis down, loading or slow), by operation",
                                labels=["operation"])
        for what, n in sorted(retry.RETRIES.items()):  # the worker's operations from the start
            c.add_metric([what.replace(" ", "_")], n)
        yield c


class OnlineCollector(Collector):
    """``streamrec_online_*``: the clicks against the lists users held
    (:mod:`serving.online`), by model version and arm; coverage for the served version."""

    def __init__(self, online: OnlineMetrics, served: Callable[[], tuple[str, int]]) -> None:
        self.online, self.served = online, served

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["model_version", "arm"]
        sums = {name: CounterMetricFamily(PREFIX + name, help_, labels=labels)
                for name, (help_, _) in COUNTERS.items()}
        hits = CounterMetricFamily(PREFIX + HITS, "Clicks on an item in the first k of the "
                                   "user's previous list", labels=[*labels, "k"])
        for (version, arm), c in sorted(self.online.counts.items()):
            for name, (_, attr) in COUNTERS.items():
                sums[name].add_metric([version, arm], getattr(c, attr))
            for k in KS:
                hits.add_metric([version, arm, str(k)], c.hits[k])
        yield from sums.values()
        yield hits
        wins = CounterMetricFamily(PREFIX + WINS, "Clicks on a team-draft list's item, by the "
                                   "arm that placed it", labels=["experiment", "arm"])
        for (experiment, team), n in sorted(self.online.wins.items()):
            wins.add_metric([experiment, team], n)
        yield wins
        yield CounterMetricFamily(PREFIX + WITHOUT_LIST, "Applied clicks by users whose "
                                  "previous list this worker does not hold (after a start or "
                                  "a rebalance)", value=self.online.without_list)
        coverage = GaugeMetricFamily(PREFIX + COVERAGE, "Distinct items in the lists of the "
                                     "served version over its bundle's items",
                                     labels=["model_version"])
        version, items = self.served()  # ("", 0) before the first model
        if version:
            coverage.add_metric([version], self.online.coverage(version, items))
        yield coverage


class WorkerMetrics:
    """Every metric a worker exports. ``registry`` is what ``/metrics`` renders."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # the standard process_*, python_gc_* and python_info series, as the default registry has
        for standard in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
            r.register(standard)
        self.events = Counter("streamrec_events", "Records consumed from the clicks topic",
                              registry=r)
        self.applied = Counter("streamrec_events_applied", "Events applied to session state",
                               registry=r)
        self.duplicates = Counter("streamrec_events_duplicate",
                                  "Events recognised as already applied", registry=r)
        self.dead_lettered = Counter("streamrec_dead_lettered", "Records sent to the dead-letter "
                                     "topic, by kind of failure (streamrec.errors.EventError.kind)",
                                     ["reason"], registry=r)
        # every kind of click dead letter from the start, at 0: a rate() over a series that
        # only appears at its first dead letter misses that first jump
        for kind in DEAD_LETTER_KINDS:
            self.dead_lettered.labels(kind)
        self.lists_written = Counter("streamrec_lists_written", "Lists written to Redis",
                                     registry=r)
        self.log_resets = Counter("streamrec_log_resets", "Clicks partitions found to begin "
                                  "again below the highest offset applied from them (their "
                                  "new events are applied)", ["partition"], registry=r)
        self.batch_size = Histogram("streamrec_batch_size_records", "Records per micro-batch",
                                    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
                                    registry=r)
        self.compute = Histogram("streamrec_compute_seconds", "Encoder + index + filtering per "
                                 "batch", buckets=_SECONDS, registry=r)
        self.redis_write = Histogram("streamrec_redis_write_seconds", "The batch's Redis "
                                     "pipeline, retries included", buckets=_SECONDS, registry=r)
        self.latency = LatencyHistogram()
        r.register(self.latency)
        self.stages = StageLatency()
        r.register(self.stages)
        self.model = Info("streamrec_model", "The bundle this worker serves", registry=r)
        self.swaps = Counter("streamrec_model_swaps", "Bundles swapped in", registry=r)
        self.refusals = Counter("streamrec_model_refusals", "Bundles refused, by check",
                                ["check"], registry=r)
        self.ready = Gauge("streamrec_ready", "1 when the worker serves (see /ready)", registry=r)
        self.item_to_live = Histogram("streamrec_item_to_live_seconds", "Items topic: record "
                                      "timestamp -> in the live catalogue",
                                      buckets=tuple(float(e) / 1000 for e in EDGES[:-1]),
                                      registry=r)
        self.live_items = Gauge("streamrec_live_items", "New items retrievable beside the "
                                "bundle (embedded by its item tower)", registry=r)
        self.shown_reports = Counter("streamrec_impressions_shown", "Applications' reports of "
                                     "what they displayed, read from the impressions topic",
                                     registry=r)
        self.shown_matched = Counter("streamrec_impressions_shown_matched", "Of those, reports "
                                     "of the list the user held (it becomes what was shown)",
                                     registry=r)
        self.dead_letter_failures = Counter(
            "streamrec_dead_letter_write_failures", "Failed attempts to write dead letters to "
            "the dead-letter topic (the batch is held and retried meanwhile)", registry=r)
        self.encoder_cache = Counter(
            "streamrec_encoder_cache", "Users encoded by the step encoder, by outcome: step (one "
            "item on the cached state), unchanged (the cached vector), prefill (the window "
            "encoded whole: not cached, evicted, or no longer the cached window's "
            "continuation), short (a window too short to cache, encoded whole), evicted "
            "(entries dropped for the budget)", ["outcome"], registry=r)
        for outcome in ("step", "unchanged", "prefill", "short", "evicted"):
            self.encoder_cache.labels(outcome)
        self.encoder_cache_bytes = Gauge("streamrec_encoder_cache_bytes", "Memory held by the "
                                         "served bundle's step encoder cache", registry=r)
        self.encoder_cache_users = Gauge("streamrec_encoder_cache_users", "Users in the served "
                                         "bundle's step encoder cache", registry=r)
        self.changelog_applied = ChangelogApplied()
        r.register(self.changelog_applied)
        self.model_created = ModelCreated()
        r.register(self.model_created)
        r.register(RedisRetries())

    def watch_changelog(self, applied: Callable[[], int]) -> None:
        """Export ``applied()`` (the session table's running count) as the changelog counter."""
        self.changelog_applied.source = applied

    def watch_model(self, created_at: Callable[[], str | None]) -> None:
        """Export the served bundle's ``created_at`` (ISO-8601; None: no bundle yet)."""
        self.model_created.source = created_at

    def watch_online(self, online: OnlineMetrics, served: Callable[[], tuple[str, int]]) -> None:
        self.registry.register(OnlineCollector(online, served))

    def watch_consumer(self, source: LagSource) -> None:
        self.registry.register(ConsumerLag(source))


# The kinds of docs/architecture.md, "Dead letters" (streamrec.errors.EventError.kind).
DEAD_LETTER_KINDS = ("tombstone", "too_large", "invalid_utf8", "malformed_json", "invalid_event",
                     "no_key", "key_mismatch", "undecodable")
_SECONDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
