"""The worker's side of model updates: the bundle it serves, and the listener that swaps it.

:class:`ModelHolder` is the one reference to the current bundle. Swapping is
one attribute assignment on the event loop, so a batch that took ``current``
before a swap finishes on that bundle, and every batch after it uses the new
one (contract 2: atomic swap, never a gap).

:class:`ModelUpdates` listens to the announcements (:mod:`serving.registry`)
with **no consumer group** (every worker assigns all partitions and reads from
the beginning), so each worker sees each announcement; a group would hand each
one to a single worker. On start a worker reads up to the end of the topic and
loads the *last* announcement before its first click; with none, it falls back
to ``bundle_path``. The first click also waits for the running experiment's arms.

The same topic carries experiments' records (:mod:`serving.experiments`). The
running experiment's arms are loaded the same way (validated, but not held to the
quality gate: an experiment compares versions an operator chose, a deliberately weak
one included), then set on the holder in one assignment
(:meth:`ModelHolder.set_experiment`); a stopped experiment is cleared. On start the
last record of each experiment decides which one runs, so a restarted worker
recovers it. An arm that cannot be loaded stops the worker from running the
experiment (it serves the fleet's bundle to everyone, arm ``all``) and says so.

A new bundle is loaded and validated (:func:`serving.registry.load_announced`)
in its own thread, so serving goes on with the old one meanwhile; only a
bundle that passes every check replaces the reference. A refused bundle is
logged, counted and reported; the worker keeps serving the version it has,
and the listener keeps listening.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from serving import experiments
from serving.bundle import ModelBundle, QualityGate, load_bundle
from serving.experiments import Experiment
from serving.registry import Announcement, decode_update, load_announced
from streamrec.errors import BundleRejected
from streamrec.kafka import drain, partition_reader
from streamrec.settings import Settings
from streams.prometheus import WorkerMetrics
from streams.retry import StatusReporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveExperiment:
    """The running experiment and its arms' bundles, by arm name, in the arms' order."""

    experiment: Experiment
    bundles: dict[str, ModelBundle]


class ModelHolder:
    """The bundle a worker serves and the running experiment, if any; ``swap`` and
    ``set_experiment`` replace them in one assignment each."""

    def __init__(self) -> None:
        self._bundle: ModelBundle | None = None
        self._ready = asyncio.Event()
        self._started = asyncio.Event()
        self.experiment: LiveExperiment | None = None

    def started(self) -> None:
        """The start-up records are applied: the last announcement and the running
        experiment's arms. Until then :meth:`wait_ready` holds the first click, so no list
        is written with arm ``all`` while an experiment's bundles are still loading."""
        self._started.set()

    def set_experiment(self, live: LiveExperiment | None) -> None:
        self.experiment = live

    @property
    def current(self) -> ModelBundle:
        if self._bundle is None:
            raise RuntimeError("no model bundle loaded yet; await wait_ready() first")
        return self._bundle

    @property
    def loaded(self) -> bool:
        return self._bundle is not None

    def swap(self, bundle: ModelBundle) -> None:
        self._bundle = bundle
        self._ready.set()

    async def wait_ready(self) -> ModelBundle:
        await self._started.wait()
        await self._ready.wait()
        return self.current


class ModelUpdates:
    """The worker's model-update listener (one per worker process)."""

    def __init__(self, settings: Settings, holder: ModelHolder, status: StatusReporter,
                 executor: Executor, metrics: WorkerMetrics | None = None,
                 on_swap: Callable[[ModelBundle], None] | None = None) -> None:
        self.settings, self.holder, self.status = settings, holder, status
        self.on_swap = on_swap  # runs before the swap, on the loop (the catalogue re-embeds)
        self.executor = executor
        self.metrics = metrics or WorkerMetrics()
        self.gate = QualityGate(settings.min_valid_ndcg, settings.max_ndcg_drop)
        self.rejected = 0

    async def run(self) -> None:
        consumer, tps = await partition_reader(self.settings, self.settings.model_updates_topic,
                                               default_partitions={0})
        try:
            latest = None
            records: list[Experiment] = []
            async for m in drain(consumer, tps):
                update = decode_update(m.value)
                if isinstance(update, Announcement):
                    latest = update
                elif update is not None:
                    records.append(update)
            try:
                if latest is not None:
                    await self.apply(latest)
                if not self.holder.loaded:
                    await self._load_fallback()
                if (exp := experiments.running(records)) is not None:
                    await self.apply_experiment(exp)
            finally:
                self.holder.started()  # clicks flow once the experiment is set, not before
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        update = decode_update(m.value)
                        if isinstance(update, Announcement):
                            await self.apply(update)
                        elif update is not None:
                            await self.apply_experiment(update)
        finally:
            await consumer.stop()

    async def apply_experiment(self, exp: Experiment) -> None:
        """Run ``exp`` (load its arms' bundles), or clear it when it is stopped."""
        live = self.holder.experiment
        if not exp.running:
            if live is not None and live.experiment.name == exp.name:
                self.holder.set_experiment(None)
                log.info("experiment %s stopped (%s)", exp.name, exp.decision or "no decision",
                         extra={"experiment": exp.name, "promoted": exp.promoted})
                self.status.report({"experiment": "", "experiment_stopped": exp.name})
            return
        if live is not None and live.experiment == exp:
            return
        have = {b.version: b for b in ([self.holder.current] if self.holder.loaded else [])}
        if live is not None:
            have.update({b.version: b for b in live.bundles.values()})
        loop = asyncio.get_running_loop()
        bundles: dict[str, ModelBundle] = {}
        try:
            for arm in exp.arms:
                if arm.version not in have:
                    a = Announcement(arm.version, arm.uri, arm.manifest_sha256, exp.updated_at,
                                     f"experiment {exp.name}")
                    have[arm.version] = await loop.run_in_executor(
                        self.executor, load_announced, a, self.settings.compute_threads,
                        QualityGate(), None, self.settings)
                bundles[arm.name] = have[arm.version]
        except BundleRejected as e:
            self._rejected(e)
            self.holder.set_experiment(None)
            log.error("experiment %s not run: arm bundle %s refused; every user gets the "
                      "fleet's bundle", exp.name, e.bundle, extra={"experiment": exp.name})
            self.status.report({"experiment": "", "experiment_error": f"{exp.name}: {e}"[:500]})
            return
        self.holder.set_experiment(LiveExperiment(exp, bundles))
        arms = ",".join(f"{a.name}={a.version}:{a.weight}" + (f":{a.overrides()}" if a.overrides() else "")
                        for a in exp.arms)
        log.info("running experiment %s (%s): %s", exp.name, exp.mode, arms,
                 extra={"experiment": exp.name})
        self.status.report({"experiment": exp.name, "experiment_mode": exp.mode,
                            "experiment_arms": arms, "experiment_error": ""})

    async def apply(self, a: Announcement) -> None:
        current = self.holder.current if self.holder.loaded else None
        if current is not None and current.version == a.version:
            return
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            bundle = await loop.run_in_executor(self.executor, load_announced, a,
                                                self.settings.compute_threads, self.gate, current,
                                                self.settings)  # an s3:// bundle: downloaded
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
                self.executor, load_bundle, path, self.settings.compute_threads,
                self.settings.encoder_cache_mb)
        except BundleRejected as e:
            self._rejected(e)
            log.error("the fallback bundle at %s is unusable: no clicks are processed until a "
                      "valid bundle is announced on %s", path, self.settings.model_updates_topic)
            return
        await self._swap(bundle, time.monotonic() - t0, "startup")

    def _rejected(self, e: BundleRejected) -> None:
        self.rejected += 1
        self.metrics.refusals.labels(e.check).inc()
        log.error("%s", e, extra={"model_version": e.bundle, "check": e.check, "path": e.path})
        self.status.report({"bundles_rejected": self.rejected, "last_rejection": str(e)[:500],
                            "last_rejection_at": int(time.time() * 1000)})

    async def _swap(self, bundle: ModelBundle, seconds: float, reason: str) -> None:
        previous = self.holder.current.version if self.holder.loaded else ""
        if self.on_swap is not None:  # what depends on the bundle is ready before its first batch
            self.on_swap(bundle)
        self.holder.swap(bundle)  # one reference: the next batch uses the new bundle
        self.metrics.swaps.inc()
        self.metrics.model.info({"version": bundle.version, "model": bundle.manifest.model,
                                 "reason": reason})
        log.info("serving model %s (was %s, %s), validated in %.0f ms", bundle.version,
                 previous or "none", reason, seconds * 1000,
                 extra={"model_version": bundle.version, "previous_version": previous,
                        "swap_reason": reason, "swap_ms": round(seconds * 1000, 1)})
        self.status.report({
            "model_version": bundle.version, "previous_version": previous,
            "swapped_at": int(time.time() * 1000), "swap_ms": round(seconds * 1000, 1),
            "swap_reason": reason})
