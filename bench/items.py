"""New items on the items topic: record timestamp -> in a worker's live catalogue.

One worker serving a bundle with an item tower; ``items`` new-item records are
sent at ``rate``/s, each stamped with its send time; the worker's
``streamrec_item_to_live_seconds`` histogram (record timestamp -> the item is
retrievable: decoded, embedded by the tower, in the snapshot the next batch
reads) gives the percentiles, as bucket upper edges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.run import Fleet
from cli.waiting import poll_until
from serving.latency import fields_from_prometheus, percentiles
from streamrec.items import ItemRecord, encode_item
from streamrec.settings import Settings
from streams.replay import send_paced

METRIC = "streamrec_item_to_live_seconds"


def tower_bundle(out: Path) -> Path:
    """A small bundle with an item tower (synthetic data and attributes), trained once."""
    from training.data.attributes import build
    from training.data.synthetic import SyntheticSpec, generate, item_attributes
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    bundle = out / "synthetic-tower"
    if (bundle / "manifest.json").is_file():
        return bundle
    spec = SyntheticSpec()
    train_and_export(generate(spec), bundle, {"max_len": 50, "dim": 64, "id_dropout": 0.5},
                     TrainConfig(epochs=3, patience=3), progress=False,
                     attributes=build(item_attributes(spec)))
    return bundle


def measure_items(base: Settings, bundle: Path, *, items: int, rate: float,
                  log_dir: Path) -> dict[str, object]:
    attributes = orjson.loads((bundle / "attributes.json").read_bytes())["tokens"]
    fleet = Fleet(base, bundle, "streamrec", 1, log_dir)
    s = fleet.settings
    try:
        fleet.start()

        def records() -> Iterator[tuple[bytes, bytes]]:
            for n in range(items):
                item_id = f"bench-new-{n}"
                tokens = [attributes[(n * 7 + k) % len(attributes)] for k in range(3)]
                yield item_id.encode(), encode_item(ItemRecord(item_id, int(time.time() * 1000),
                                                               tokens))

        t0 = time.monotonic()
        asyncio.run(send_paced(s, s.items_topic, records(), rate))

        worker = fleet.workers[0]
        poll_until(lambda: worker.metric("streamrec_live_items", default=0.0), lambda n: n >= items, timeout=120, procs=fleet.procs,
                   what=f"{items} new items live", interval=0.1)
        seconds = time.monotonic() - t0
        fields = fields_from_prometheus(worker.get("/metrics")[1].decode(), METRIC)  # token sent
        return {"items": items, "rate": rate, "seconds": round(seconds, 2),
                "item_to_live_ms": percentiles({k: str(v) for k, v in fields.items()}),
                "bundle": str(bundle)}
    finally:
        fleet.stop()
