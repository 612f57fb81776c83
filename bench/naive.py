"""The naive baseline: the seed article's code path, for side-by-side ratios.

One event at a time; JSON via the standard library; torch eager forward of the
full padded sequence; a full-catalogue matrix product and ``topk``; one Redis
round trip per event. It writes the same keys and status fields as a worker, so
the benchmark measures both the same way. Run as ``python -m bench.naive``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import torch
from aiokafka import AIOKafkaConsumer

from bench.bundle import torch_weights
from serving.keys import meta_prefix, recs_key, worker_key
from serving.latency import bucket_counts
from serving.redis_client import AsyncClient, async_client
from serving.vocab import Vocabulary
from streamrec.kafka import client_kwargs
from streamrec.settings import Settings
from training.models.retrieval import SASRec, SASRecConfig


async def main() -> None:
    s = Settings.from_env()
    torch.set_num_threads(s.compute_threads)
    ckpt = torch.load(torch_weights(s.bundle_path), weights_only=True)
    model = SASRec(SASRecConfig(**ckpt["config"])).eval()
    model.load_state_dict(ckpt["state"])
    vocab = Vocabulary.load(s.bundle_path / "vocab.json")
    items = model.item_vectors()[1:].detach()
    r = async_client(s.redis_url.get_secret_value(), s.redis_cluster)
    wkey = worker_key(meta_prefix(s.key_prefix, s.redis_cluster), s.worker_id or f"naive-{os.getpid()}")
    await r.hset(wkey, mapping={"model_version": "naive", "rebalanced_at": int(time.time() * 1000)})
    consumer = AIOKafkaConsumer(s.clicks_topic, **client_kwargs(s),
                                group_id=f"{s.app_id}-naive", auto_offset_reset="earliest")
    await consumer.start()
    sessions: dict[str, list[int]] = {}
    lags: list[int] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for msgs in batch.values():
                for msg in msgs:  # strictly one event at a time
                    await handle(msg.value, sessions, model, items, vocab, r, s)
                    lags.append(int(time.time() * 1000) - json.loads(msg.value)["ts"])
                    if len(lags) >= 50:  # stats only; often enough to time a backlog drain
                        await _flush(r, wkey, lags)
            await _flush(r, wkey, lags)
    finally:
        await consumer.stop()


async def handle(value: bytes, sessions: dict[str, list[int]], model: SASRec, items: torch.Tensor,
                 vocab: Vocabulary, r: AsyncClient, s: Settings) -> None:
    ev = json.loads(value)
    seq = sessions.setdefault(ev["user_id"], [])
    idx = vocab.index(ev["item_id"])
    if idx is not None:
        seq.append(idx)
    x = torch.zeros((1, model.cfg.max_len), dtype=torch.long)
    tail = seq[-model.cfg.max_len:]
    if tail:
        x[0, -len(tail):] = torch.tensor(tail)
    with torch.no_grad():
        scores = model(x) @ items.T  # (1, N): the full catalogue
        top = torch.topk(scores, s.top_n + len(set(seq))).indices[0].tolist()
    seen = set(seq)
    rec = [vocab.ids[i] for i in top if i + 1 not in seen][: s.top_n]
    pipe = r.pipeline(transaction=False)  # one round trip per event
    key = recs_key(s.key_prefix, ev["user_id"])
    pipe.hset(key, mapping={"items": json.dumps(rec), "model_version": "naive",
                            "last_event_id": ev["event_id"], "last_event_ts": ev["ts"],
                            "generated_at": int(time.time() * 1000)})
    pipe.pexpire(key, s.recs_ttl_s * 1000)
    await pipe.execute()


async def _flush(r: AsyncClient, wkey: str, lags: list[int]) -> None:
    if not lags:
        return
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(wkey, "events", len(lags))
    for k, v in bucket_counts(np.asarray(lags)).items():
        pipe.hincrby(wkey, k, v)
    await pipe.execute()
    lags.clear()


if __name__ == "__main__":
    asyncio.run(main())
