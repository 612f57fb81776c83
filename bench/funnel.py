"""The funnel's compute, in process: ``serving.funnel.recommend`` per micro-batch.

``streamrec bench`` measures the whole worker (Kafka, state, Redis); this one
isolates the step a worker runs in its executor for each batch, so the cost of
each stage (retrieval, the ranker, the re-ranking rules) can be compared
without the broker's noise. Histories are drawn from the bundle's own
vocabulary (lengths uniform in 1..max_len); each configuration runs the same
batches, after one warm-up batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from serving.bundle import ModelBundle, load_bundle
from serving.catalogue import EMPTY, Catalogue, CatalogueView
from serving.funnel import Batch, Funnel, FunnelConfig
from serving.rerank import RerankConfig
from streamrec.items import ItemRecord

# The rules `streamrec bench` turns on in its "rules on" rows (docs/benchmarks.md).
BENCH_RULES_LAMBDA = 0.8


@dataclass
class FunnelResult:
    config: str
    batch: int
    batches: int
    ms_per_batch_p50: float
    ms_per_batch_p99: float
    us_per_user: float

    def row(self) -> str:
        return (f"{self.config:18s} batch {self.batch:4d}: p50 {self.ms_per_batch_p50:7.2f} ms  "
                f"p99 {self.ms_per_batch_p99:7.2f} ms  {self.us_per_user:7.1f} us/user")


def bench_rules(bundle: ModelBundle) -> RerankConfig:
    """MMR(0.8) over item vectors, three blocked items and one pin (popular items)."""
    ids = bundle.vocab.decode([int(i) for i in bundle.popular[:4]])
    return RerankConfig(blocklist=frozenset(ids[:3]), mmr_lambda=BENCH_RULES_LAMBDA,
                        pins={0: ids[3]} if len(ids) > 3 else {})


NEW_ITEMS = 200  # live new items for the slot rows (bundles with an item tower)


def new_item_records(bundle: ModelBundle, n: int, rng: np.random.Generator,
                     ts_ms: int = 1) -> list[ItemRecord]:
    """``n`` items-topic records of new items (``bench-new-{k}``), each with the attributes of
    a random bundle item; none where the bundle cannot embed them (no tower or no attributes)."""
    ids = list(bundle.attributes)
    if bundle.tower is None or not ids:
        return []
    return [ItemRecord(f"bench-new-{k}", ts_ms, list(bundle.attributes[ids[int(j)]]))
            for k, j in enumerate(rng.integers(0, len(ids), n))]


def new_items(bundle: ModelBundle, n: int, rng: np.random.Generator) -> CatalogueView:
    """:func:`new_item_records` applied to an empty catalogue."""
    records = new_item_records(bundle, n, rng)
    return Catalogue().apply(records, bundle) if records else EMPTY


def histories(bundle: ModelBundle, n: int, rng: np.random.Generator,
              length: int | None = None) -> list[list[str]]:
    """``n`` histories of the bundle's items: of ``length`` items each, or of lengths
    uniform in 1..max_len."""
    ids = bundle.vocab.ids
    lengths = rng.integers(1, bundle.max_len + 1, n) if length is None else [length] * n
    return [[ids[int(i)] for i in rng.integers(0, len(ids), int(m))] for m in lengths]


def run_lengths(bundle_path: Path, lengths: list[int], batch: int, batches: int = 30,
                top_n: int = 10, seed: int = 0,
                on_result: Callable[[FunnelResult], None] | None = None) -> list[FunnelResult]:
    """What an event costs as sessions grow: the plain funnel (encoder, index, filtering)
    on a batch of ``batch`` sessions of ``length - 1`` items, each then given the event
    that makes it ``length`` items, as a worker sees them, for each of ``lengths``;
    ``batches`` such batches, each of other users. Two rows per length: ``whole window``
    encodes each window whole; ``step`` (a bundle with a step model) takes one step on
    each user's cached state, filled by the untimed call before. A length just past
    ``max_len`` (or a further stride of ``max_len // 2``) times the event that moves the
    window's start: a prefill of the new window, once per stride."""
    bundle = load_bundle(bundle_path, cache_mb=1024)
    funnel = Funnel(FunnelConfig(top_n=top_n, ranking="off", blending="off"))
    modes = ["whole window"] + (["step"] if bundle.step is not None else [])
    out: list[FunnelResult] = []
    ids = bundle.vocab.ids
    for length in lengths:
        for mode in modes:
            rng = np.random.default_rng(seed)
            times = []
            for g in range(batches + 1):
                users = [f"bench-{mode}-{length}-{g}-{u}" for u in range(batch)]
                sessions = histories(bundle, batch, rng, length - 1) if length > 1 else [[] for _ in users]
                keyed = users if mode == "step" else None
                if length > 1:
                    funnel.run(bundle, Batch(sessions, counts=[length - 1] * batch, users=keyed))
                for h in sessions:
                    h.append(ids[int(rng.integers(0, len(ids)))])
                t = time.perf_counter()
                funnel.run(bundle, Batch(sessions, counts=[length] * batch, users=keyed))
                if g:  # the first batch warms up
                    times.append((time.perf_counter() - t) * 1000)
            r = FunnelResult(f"{mode}, length {length}", batch, batches,
                             float(np.percentile(times, 50)), float(np.percentile(times, 99)),
                             float(np.mean(times)) * 1000 / batch)
            out.append(r)
            if on_result:
                on_result(r)
    return out


def run(bundle_path: Path, batch_sizes: list[int], batches: int = 30, top_n: int = 10,
        candidates: int = 200, seed: int = 0,
        on_result: Callable[[FunnelResult], None] | None = None) -> list[FunnelResult]:
    bundle = load_bundle(bundle_path)
    rules = bench_rules(bundle)
    base = FunnelConfig(top_n=top_n, candidates=candidates, ranking="off", blending="off")
    ranked = replace(base, ranking="on")
    configs: list[tuple[str, FunnelConfig]] = [("plain", base)]
    if bundle.ranker is not None:
        configs.append(("ranker", ranked))
    configs.append(("rules", replace(base, rules=rules)))
    if bundle.ranker is not None:
        configs.append(("ranker+rules", replace(ranked, rules=rules)))
    rng = np.random.default_rng(seed)
    live = new_items(bundle, NEW_ITEMS, rng)
    funnels = [(name, Funnel(c), EMPTY) for name, c in configs]
    if bundle.blend is not None:  # the content blend (serving.content_blend), without the ranker
        funnels.insert(1, ("content blend", Funnel(replace(base, blending="on")), EMPTY))
    if live.size:  # the new-item slot, by vector score and by content (serving.new_item_slot)
        by_content = RerankConfig(new_item_slot=9, new_item_content_weight=1.0)
        funnels += [("slot by score", Funnel(replace(base, rules=RerankConfig(new_item_slot=9))), live),
                    ("slot by content", Funnel(replace(base, rules=by_content)), live)]
    out: list[FunnelResult] = []
    for b in batch_sizes:
        data = [histories(bundle, b, rng) for _ in range(batches + 1)]
        for name, funnel, catalogue in funnels:
            times = []
            for i, h in enumerate(data):
                t = time.perf_counter()
                funnel.run(bundle, Batch(h, live=catalogue))
                if i:  # the first batch warms up
                    times.append((time.perf_counter() - t) * 1000)
            r = FunnelResult(name, b, batches, float(np.percentile(times, 50)),
                             float(np.percentile(times, 99)), float(np.mean(times)) * 1000 / b)
            out.append(r)
            if on_result:
                on_result(r)
    return out


def as_dict(results: list[FunnelResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
