"""The Redis write of a batch, in process: ``serving.redis_store.RecsWriter.write``.

A worker's event loop packs every batch's lists into one Redis round trip and
parses the reply; ``streamrec bench`` sees that cost only mixed with Kafka's
and the broker's noise. This one times the writer alone against the
configured Redis, under a key prefix of its own (deleted afterwards): the
client's CPU per batch (what the worker's event loop pays) and the wall time
of the round trip (Redis's work included). Lists of ``top_n`` items, users
drawn at random from ``users``, ``seq`` rising per batch so every list is
written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np

from serving.list_types import SOURCE_MODEL, Provenance, Ranked
from serving.redis_client import async_client
from serving.redis_store import RecsWriter


@dataclass
class StoreResult:
    batch: int
    batches: int
    client_cpu_ms_per_batch: float
    wall_ms_per_batch_p50: float
    wall_ms_per_batch_p99: float
    client_cpu_us_per_list: float

    def row(self) -> str:
        return (f"batch {self.batch:4d}: client cpu {self.client_cpu_ms_per_batch:6.2f} ms/batch "
                f"({self.client_cpu_us_per_list:5.1f} us/list)  wall p50 "
                f"{self.wall_ms_per_batch_p50:6.2f} ms  p99 {self.wall_ms_per_batch_p99:6.2f} ms")


def _batch(rng: np.random.Generator, size: int, seq: int, users: int, top_n: int,
           ) -> list[tuple[Provenance, Ranked]]:
    out = []
    for u in rng.choice(users, size, replace=False):
        items = [f"i{x}" for x in rng.integers(0, 12_000, top_n)]
        out.append((Provenance(f"u{u}", seq, f"e{seq}-{u}", 1_700_000_000_000 + seq),
                    Ranked(items, [float(x) for x in rng.random(top_n)], SOURCE_MODEL)))
    return out


async def _run(redis_url: str, batch_sizes: list[int], batches: int, users: int, top_n: int,
               seed: int, cluster: bool = False) -> list[StoreResult]:
    client = async_client(redis_url, cluster)
    prefix = f"bench-store:{uuid.uuid4().hex[:8]}:"
    writer = RecsWriter(client, prefix, ttl_s=600, status_ttl_s=600, cluster=cluster)
    rng = np.random.default_rng(seed)
    out = []
    try:
        await writer.load_scripts()
        seq = 0
        for size in batch_sizes:
            data = []
            for _ in range(batches + 2):
                seq += 1
                data.append(_batch(rng, min(size, users), seq, users, top_n))
            walls, cpu = [], 0.0
            for i, lists in enumerate(data):
                c, t = time.process_time(), time.perf_counter()
                await writer.write(lists, "bench", epoch=1, generated_at_ms=0, worker_id="bench",
                                   counters={"events": len(lists)}, status={"last_batch_size": len(lists)},
                                   batch_id=f"{seq}:{i}")
                if i >= 2:  # the first two warm up the connection and the script cache
                    walls.append((time.perf_counter() - t) * 1000)
                    cpu += time.process_time() - c
            out.append(StoreResult(size, batches, cpu * 1000 / batches,
                                   float(np.percentile(walls, 50)), float(np.percentile(walls, 99)),
                                   cpu * 1e6 / batches / size))
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}*", count=10_000)]
        keys += [k async for k in client.scan_iter(f"{{{prefix}}}*", count=10_000)]  # cluster
        for lo in range(0, len(keys), 5000):
            await client.delete(*keys[lo:lo + 5000])
        await client.aclose()
    return out


def run(redis_url: str, batch_sizes: list[int], batches: int = 50, users: int = 10_000,
        top_n: int = 10, seed: int = 0, cluster: bool = False) -> list[StoreResult]:
    """``cluster``: ``redis_url`` names a node of a Redis Cluster."""
    return asyncio.run(_run(redis_url, batch_sizes, batches, users, top_n, seed, cluster))


def as_dict(results: list[StoreResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
