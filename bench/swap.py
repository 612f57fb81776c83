"""Hot-swap cost under load: validation time of a new bundle, and latency before vs across it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from bench.load import produce
from bench.run import Fleet
from serving.latency import diff, percentiles
from serving.registry import publish_bundle
from streamrec.settings import Settings


def measure_swap(base: Settings, a: Path, b: Path, *, rate: float, seconds: float, items: int,
                 log_dir: Path) -> dict[str, object]:
    """Serve ``a`` at ``rate``/s, publish ``b`` midway; return swap time and latency windows."""
    store = log_dir.parent / "swap-store"
    settings = base.model_copy(update={"bundle_store": store})
    fleet = Fleet(settings, a, "streamrec", 1, log_dir)
    s = fleet.settings
    try:
        fleet.start()
        asyncio.run(publish_bundle(s, a, validate=False))
        fleet.wait_until(lambda st: st[0].get("model_version") not in (None, ""), 60)
        events = int(rate * seconds)
        load = threading.Thread(target=lambda: asyncio.run(produce(
            s, s.clicks_topic, events=events, rate=rate, users=10_000, items=items,
            run="swap")))
        load.start()
        time.sleep(seconds / 2)
        before = fleet.latency()[0]["total"]
        announced = asyncio.run(publish_bundle(s, b, validate=False))
        fleet.wait_until(lambda st: st[0].get("model_version") == announced.version, 120)
        time.sleep(1.0)
        across, swapped = fleet.latency()[0]["total"], fleet.status()[0]
        load.join()
        fleet.wait_events(events)
        after, status = fleet.latency()[0]["total"], fleet.status()[0]
        return {"rate": rate, "swap_ms": float(swapped["swap_ms"]), "items": items,
                "first_half": percentiles({k: str(v) for k, v in diff(before, {}).items()}),
                "swap_window": percentiles({k: str(v) for k, v in diff(across, before).items()}),
                "after": percentiles({k: str(v) for k, v in diff(after, across).items()}),
                "events": int(status["events"]), "version_after": status["model_version"]}
    finally:
        fleet.stop()
