"""The online metrics' own cost, in process: ``OnlineMetrics.observe`` and ``remember`` per
micro-batch (no broker, no Redis), as a worker calls them around each batch."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

from serving.online import OnlineMetrics


@dataclass(frozen=True)
class OnlineResult:
    batch_size: int
    batches: int
    held_users: int
    us_per_event: float  # observe + remember, per click (one list written per click)

    def row(self) -> str:
        return (f"online metrics  batch {self.batch_size:5d}  held lists {self.held_users:7d}  "
                f"{self.us_per_event:6.2f} us per event")


def run(batch_sizes: list[int], batches: int = 400, users: int = 10_000, items: int = 12_000,
        top_n: int = 20, seed: int = 0) -> list[OnlineResult]:
    rng = random.Random(seed)
    catalogue = [f"i{n}" for n in range(items)]
    ids = [f"u{n}" for n in range(users)]
    lists = {u: rng.sample(catalogue, top_n) for u in ids}
    out = []
    for size in batch_sizes:
        m = OnlineMetrics(users)
        m.remember(((u, lists[u], "l") for u in ids), "v1")
        # the inputs are drawn before the clock starts: only the metrics' work is timed
        work = [[(u, rng.choice(catalogue)) for u in rng.sample(ids, min(size, users))]
                for _ in range(batches)]
        t = time.perf_counter()
        for clicks in work:
            m.observe((u, item, None) for u, item in clicks)
            m.remember(((u, lists[u], "l") for u, _ in clicks), "v1")
        elapsed = time.perf_counter() - t
        out.append(OnlineResult(size, batches, users,
                                elapsed / sum(len(c) for c in work) * 1e6))
    return out


def as_dict(results: list[OnlineResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
