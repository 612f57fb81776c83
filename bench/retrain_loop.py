"""Retraining from what was shown, end to end in the simulator: does a model retrained with
impression hard negatives serve better lists than one retrained without them?

1. A worker serves ``--serving`` (a bundle of the synthetic world) with impressions on,
   on topics and a key prefix of this run's own. The live simulator
   (:mod:`bench.simulate_live`) plays its users against it: each click names the list it
   came from, and each user reports what it saw.
2. The clicks and impressions topics are read as ``streamrec train --from-topic`` reads
   them (:func:`training.pipeline.load_topic_data`); SASRec is trained on that log with
   the sampled loss twice per seed: ``uniform`` (shared uniform negatives only) and
   ``impressions`` (plus, per position, up to ``n`` items shown and not clicked mixed 1:1
   with as many uniform ones). Offline: the log's test split, full ranking.
3. Online: the two bundles of each seed are the arms of an A/B experiment in the
   in-process simulator (:func:`bench.simulate.run`, the worker's funnel) on users of the
   same world; online HR@10 per arm and the two-proportion test.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import simulate
from bench import simulate_live as live
from bench.simulate import SimSpec
from cli.harness import WorkerProcess
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from training.config import load_config, resolve_flags
from training.data.synthetic import SyntheticSpec
from training.pipeline import load_topic_data, train_and_export

ARMS = ("uniform", "impressions")


def isolated(base: Settings, run_id: str) -> Settings:
    """``base`` with this run's own topics, key prefix, consumer group and worker id."""
    t = f"retrain-loop-{run_id}"
    return base.model_copy(update={
        "app_id": t, "clicks_topic": f"{t}-clicks", "dlq_topic": f"{t}-dlq",
        "model_updates_topic": f"{t}-models", "items_topic": f"{t}-items",
        "impressions_topic": f"{t}-impressions", "key_prefix": f"{t}:", "worker_id": t,
        "impressions": True})


def make_log(settings: Settings, serving: Path, world_spec: SyntheticSpec, spec: SimSpec,
             log: Path, on_progress: Callable[[str], None]) -> live.LiveResult:
    """Serve ``serving`` on one worker (logging to ``log``) and play the simulated users
    against it."""
    asyncio.run(ensure_topics(settings))
    w = WorkerProcess.start(settings, log, bundle=serving)
    try:
        w.wait_ready()
        return asyncio.run(live.run(settings, world_spec, spec, on_progress=on_progress))
    finally:
        w.stop()


def run(base: Settings, serving: Path, world_spec: SyntheticSpec, log_spec: SimSpec,
        online_spec: SimSpec, seeds: Sequence[int], epochs: int, impression_negatives: int,
        workdir: Path, worker_log: Path, top_k: int = 10,
        on_progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """``workdir``: the retrained bundles; ``worker_log``: the serving worker's log."""
    settings = isolated(base, uuid.uuid4().hex[:8])
    logged = make_log(settings, serving, world_spec, log_spec, worker_log, on_progress)
    data, negs = load_topic_data(settings, top_k=top_k, on_read=on_progress)
    assert negs is not None
    _, mcfg, tcfg, _ = resolve_flags(load_config(None), "sasrec", {})
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    online: list[dict[str, Any]] = []
    for seed in seeds:
        bundles = {}
        for arm in ARMS:
            n = impression_negatives if arm == "impressions" else 0
            cfg = replace(tcfg, epochs=epochs, patience=epochs, loss="sampled",
                          impression_negatives=n, seed=seed, refit=False)
            rep = train_and_export(data, workdir / f"{arm}-{seed}", dict(mcfg), cfg,
                                   progress=False, negatives=negs if n else None, blend=False)
            bundles[arm] = str(rep.bundle)
            runs[arm].append({"seed": seed, "best_epoch": rep.best_epoch, "valid": rep.valid,
                              "test": rep.test["full"]})
            on_progress(f"seed {seed} {arm}: test NDCG@10 {rep.test['full']['ndcg@10']:.4f}")
        sim = simulate.run(world_spec, bundles, "ab", replace(online_spec, seed=seed))
        online.append({"seed": seed, "hr@10": sim.hr10, "ndcg@10": sim.ndcg10,
                       "clicks": sim.clicks, "p_value": sim.p_value,
                       "difference": sim.difference})
        on_progress(f"seed {seed} online HR@10 " + ", ".join(f"{a} {v:.4f}" for a, v in sim.hr10.items())
                    + f" (p {sim.p_value:.3g})")
    positions = sum(max(len(u) - 1, 0) for u in negs)
    return {
        "world": world_spec.__dict__, "serving": str(serving), "log": {
            "users": log_spec.users, "steps": log_spec.steps, "warmup": log_spec.warmup,
            "clicks": logged.clicks, "shown_reports": logged.shown_reports,
            "hr@10": {a: c.ratios()["hr@10"] for a, c in logged.counts.items()},
            "positions": positions,
            "positions_with_negatives": sum(1 for u in negs for p in u[1:] if p)},
        "seeds": list(seeds), "epochs": epochs, "impression_negatives": impression_negatives,
        "model": mcfg, "runs": runs, "online": online,
        "summary": {
            "offline": {a: _mean_sd([r["test"]["ndcg@10"] for r in rows])
                        for a, rows in runs.items()},
            "online_hr@10": {a: _mean_sd([o["hr@10"][a] for o in online]) for a in ARMS},
            "online_wins": sum(o["hr@10"]["impressions"] > o["hr@10"]["uniform"] for o in online),
        }}


def _mean_sd(xs: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.mean(xs), "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0}
