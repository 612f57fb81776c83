"""Model updates: a broadcast every worker hears, and the validated hot-swap.

Announcements are consumed with **no consumer group** (every worker assigns
all partitions and reads from the beginning), so each worker sees each
announcement; a group would hand each one to a single worker. On start a
worker reads up to the end of the topic and loads the *last* announcement
before its first click; with none, it falls back to ``bundle_path``.

A new bundle is loaded and validated in its own thread (serving goes on with
the old one meanwhile); only a bundle that passes every check replaces the
reference. A refused bundle is logged, counted and reported; the worker keeps
serving the version it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from serving.bundle import ModelBundle, load_bundle
from serving.registry import (
    Announcement,
    decode_announcement,
    encode_announcement,
    manifest_sha256,
    uri_to_path,
)
from streamrec.errors import BundleError, BundleRejected
from streamrec.kafka import client_kwargs
from streamrec.settings import Settings
from streams.drain import drain
from streams.model import ModelHolder
from streams.retry import StatusReporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityGate:
    """Optional floor on validation NDCG@10, and max drop versus the current bundle."""

    min_valid_ndcg: float | None = None
    max_ndcg_drop: float | None = None

    def check(self, new: ModelBundle, current: ModelBundle | None) -> None:
        score = valid_ndcg(new)
        if self.min_valid_ndcg is not None and (score is None or score < self.min_valid_ndcg):
            raise BundleRejected(new.version, "quality", f"validation NDCG@10 {score} is below the "
                                 f"floor {self.min_valid_ndcg}", "manifest.json")
        cur = valid_ndcg(current) if current else None
        if self.max_ndcg_drop is not None and cur is not None and score is not None \
                and score < cur - self.max_ndcg_drop:
            raise BundleRejected(new.version, "quality", f"validation NDCG@10 {score:.4f} is more "
                                 f"than {self.max_ndcg_drop} below the current {cur:.4f}", "manifest.json")


def valid_ndcg(bundle: ModelBundle) -> float | None:
    try:
        return float(bundle.manifest.metrics["valid"]["full"]["ndcg@10"])
    except (KeyError, TypeError, ValueError):
        return None


def load_announced(a: Announcement, threads: int, gate: QualityGate,
                   current: ModelBundle | None) -> ModelBundle:
    """Validate an announced bundle fully (blocking: run off the event loop)."""
    try:
        path = uri_to_path(a.uri)
        actual = manifest_sha256(path)
    except (BundleError, OSError) as e:
        raise BundleRejected(a.version, "uri", str(e)) from None
    if actual != a.manifest_sha256:
        raise BundleRejected(a.version, "announcement", f"manifest sha256 {actual[:12]}… is not the "
                             f"announced {a.manifest_sha256[:12]}…", "manifest.json")
    bundle = load_bundle(path, threads)
    if bundle.version != a.version:
        raise BundleRejected(a.version, "announcement", f"directory holds version {bundle.version}")
    gate.check(bundle, current)
    return bundle


class ModelUpdates:
    """The worker's model-update listener (one per worker process)."""

    def __init__(self, settings: Settings, holder: ModelHolder, status: StatusReporter,
                 executor: Executor) -> None:
        self.settings, self.holder, self.status = settings, holder, status
        self.executor = executor
        self.gate = QualityGate(settings.min_valid_ndcg, settings.max_ndcg_drop)
        self.rejected = 0

    async def run(self) -> None:
        consumer = await _broadcast_consumer(self.settings)
        try:
            latest = await _read_to_end(consumer, self.settings.model_updates_topic)
            if latest is not None:
                await self.apply(latest)
            if not self.holder.loaded:
                await self._load_fallback()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        a = _decode(m.value)
                        if a is not None:
                            await self.apply(a)
        finally:
            await consumer.stop()

    async def apply(self, a: Announcement) -> None:
        current = self.holder.current if self.holder.loaded else None
        if current is not None and current.version == a.version:
            return
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            bundle = await loop.run_in_executor(self.executor, load_announced, a,
                                                self.settings.compute_threads, self.gate, current)
        except BundleRejected as e:
            self._rejected(e)
            return
        await self._swap(bundle, time.monotonic() - t0, a.reason)

    async def _load_fallback(self) -> None:
        path: Path = self.settings.bundle_path
        if not (path / "manifest.json").is_file():
            log.warning("no announced model and no bundle at %s: waiting for an announcement on %s",
                        path, self.settings.model_updates_topic)
            return
        t0 = time.monotonic()
        try:
            bundle = await asyncio.get_running_loop().run_in_executor(
                self.executor, load_bundle, path, self.settings.compute_threads)
        except BundleRejected as e:
            self._rejected(e)
            log.error("the fallback bundle at %s is unusable: no clicks are processed until a "
                      "valid bundle is announced on %s", path, self.settings.model_updates_topic)
            return
        await self._swap(bundle, time.monotonic() - t0, "startup")

    def _rejected(self, e: BundleRejected) -> None:
        self.rejected += 1
        log.error("%s", e)
        self.status.report({"bundles_rejected": self.rejected, "last_rejection": str(e)[:500],
                            "last_rejection_at": int(time.time() * 1000)})

    async def _swap(self, bundle: ModelBundle, seconds: float, reason: str) -> None:
        previous = self.holder.current.version if self.holder.loaded else ""
        self.holder.swap(bundle)  # one reference: the next batch uses the new bundle
        log.info("serving model %s (was %s, %s), validated in %.0f ms", bundle.version,
                 previous or "none", reason, seconds * 1000)
        self.status.report({
            "model_version": bundle.version, "previous_version": previous,
            "swapped_at": int(time.time() * 1000), "swap_ms": round(seconds * 1000, 1),
            "swap_reason": reason})


def _decode(value: bytes | None) -> Announcement | None:
    try:
        return decode_announcement(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        log.error("ignoring malformed model announcement: %s", e)
        return None


async def _broadcast_consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    topic = settings.model_updates_topic
    await consumer.topics()  # refresh metadata
    parts = consumer.partitions_for_topic(topic) or {0}
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def _read_to_end(consumer: AIOKafkaConsumer, topic: str,
                       on_each: Callable[[Announcement], None] | None = None) -> Announcement | None:
    latest = None
    async for m in drain(consumer, list(consumer.assignment())):
        if (a := _decode(m.value)) is not None:
            latest = a
            if on_each:
                on_each(a)
    return latest


async def announcement_history(settings: Settings) -> list[Announcement]:
    """Every announcement so far, oldest first (for ``models`` and ``rollback``)."""
    consumer = await _broadcast_consumer(settings)
    history: list[Announcement] = []
    try:
        await _read_to_end(consumer, settings.model_updates_topic, history.append)
    finally:
        await consumer.stop()
    return history


async def announce(settings: Settings, a: Announcement) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        # key = version: the topic may be compacted and still end with the current version
        await producer.send_and_wait(settings.model_updates_topic, encode_announcement(a),
                                     key=a.version.encode())
    finally:
        await producer.stop()


async def publish_bundle(settings: Settings, bundle_dir: Path, *, validate: bool = True) -> Announcement:
    """Copy a bundle into the store and announce it (``validate``: refuse what workers would)."""
    from serving.registry import BundleStore
    from streams.admin import ensure_topics

    if validate:
        await asyncio.get_running_loop().run_in_executor(None, load_bundle, bundle_dir)
    a = BundleStore(settings.bundle_store).publish(bundle_dir)
    await ensure_topics(settings, [settings.model_updates_topic])
    await announce(settings, a)
    return a
