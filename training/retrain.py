"""The retrain job (``streamrec retrain``): read the topics since the last bundle, train,
evaluate, and hand the bundle to a publisher (announce it, start it as a canary, or none).

One shot, for a cron job or a Kubernetes CronJob: it reads the clicks and impressions
topics up to its own start (:mod:`training.data.from_topic`), so it terminates on a live log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from streamrec.settings import Settings
from training.config import SEQUENCE_MODELS, load_config, resolve_flags
from training.pipeline import load_topic_data, run_training

# Given the settings and the new bundle's directory, publish it; returns what to report
# (the announced URI, the canary experiment's name).
Publisher = Callable[[Settings, Path], Coroutine[Any, Any, str]]


async def last_bundle_ms(settings: Settings) -> int | None:
    """When the current bundle was made: the announced version's manifest ``created_at``
    when the store holds it, else the last announcement's ``published_at``; ``None`` when
    nothing was ever announced."""
    # serving.registry loads bundles (ONNX Runtime, FAISS): imported by the job, not by training
    from serving.registry import announcement_history, open_store

    history = await announcement_history(settings)
    if not history:
        return None
    last = history[-1]
    for m in open_store(settings).versions():
        if m.version == last.version:
            return int(datetime.fromisoformat(m.created_at).timestamp() * 1000)
    return last.published_at


def retrain(settings: Settings, out: Path, *, config: Path | None, flags: dict[str, Any],
            since_ms: int | None = None, from_last_bundle: bool = True, top_k: int = 10,
            window_ms: int | None = None, publish: Publisher | None = None,
            on_read: Callable[[str], None] | None = None, progress: bool = False) -> dict[str, Any]:
    """Read (since ``since_ms``, else since the last bundle with ``from_last_bundle``, else
    everything), train a sequence model with the resolved configuration, evaluate it (the
    bundle's test metrics), and ``publish`` it when given. The report says what was read and
    published."""
    chosen, _, tcfg, _ = resolve_flags(load_config(config), None, flags)
    if chosen not in SEQUENCE_MODELS:
        from streamrec.errors import ConfigError
        raise ConfigError(f"retrain exports a bundle: the model must be one of {SEQUENCE_MODELS}, not {chosen}")
    if since_ms is None and from_last_bundle:
        since_ms = asyncio.run(last_bundle_ms(settings))
    data, negs = load_topic_data(settings, since_ms, impressions=tcfg.impression_negatives > 0,
                                 top_k=top_k, window_ms=window_ms, on_read=on_read)
    report = run_training(data, out, config=config, model=None, flags=flags, progress=progress,
                          negatives=negs)
    report["since_ms"] = since_ms
    report["impression_positions"] = 0 if negs is None else sum(1 for u in negs for p in u if p)
    report["published"] = asyncio.run(publish(settings, out)) if publish is not None else None
    return report
