"""Reading recommendation lists from Redis: what applications call.

Applications in other languages can read the same data directly: see
docs/architecture.md, "Redis layout".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from serving.keys import meta_prefix, recs_key, worker_key, workers_set
from serving.redis_client import SyncClient, sync_client


@dataclass(frozen=True, slots=True)
class Recommendations:
    """One user's stored list and its provenance."""

    user_id: str
    items: list[str]
    scores: list[float | None]
    source: str  # "model", or for a user with no usable history "trending" or "popular"
    model_version: str
    generated_at: int  # epoch ms
    last_event_id: str
    last_event_ts: int  # epoch ms
    seq: int  # events applied to the user's session when this list was made
    epoch: int = 0  # fencing epoch of the worker that wrote it (0: written before epochs)
    schema: int = 0  # layout version (serving.keys.SCHEMA_VERSION; 0: written before versions)
    reasons: list[str] | None = None  # why each item is there (serving.rerank); None: older writer
    list_id: str | None = None  # names this list in impressions and clicks; None: not named
    arm: str | None = None  # the experiment arm that made it ("all": none runs; None: older writer)

    def to_dict(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class RecsReader:
    """Synchronous reader. ``RecsReader.from_url("redis://…", "streamrec:")``; on Redis
    Cluster, ``RecsReader.from_url("redis://any-node:6379", "streamrec:", cluster=True)``."""

    def __init__(self, client: SyncClient, prefix: str, cluster: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self.meta = meta_prefix(prefix, cluster)  # worker status keys (hash-tagged on a cluster)

    @classmethod
    def from_url(cls, url: str, prefix: str, cluster: bool = False) -> RecsReader:
        return cls(sync_client(url, cluster), prefix, cluster)

    def get_recommendations(self, user_id: str) -> Recommendations | None:
        """The user's current list, or None if there is none (never seen, or expired)."""
        raw = self.client.hgetall(recs_key(self.prefix, user_id))
        return parse(user_id, raw) if raw else None

    def worker_statuses(self) -> dict[str, dict[str, str]]:
        """Every live worker: its id -> its status hash, by id.

        A worker's hash expires when it stops writing and heart-beating
        (``STREAMREC_STATUS_TTL_S``); such a worker is dropped from the set here.
        """
        ids = sorted(_text(i) for i in self.client.smembers(workers_set(self.meta)))
        out = {}
        for wid in ids:
            fields = {_text(k): _text(v) for k, v in
                      self.client.hgetall(worker_key(self.meta, wid)).items()}
            if fields:
                out[wid] = fields
            else:
                self.client.srem(workers_set(self.meta), wid)
        return out


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def parse(user_id: str, raw: Mapping[bytes | str, bytes | str]) -> Recommendations:
    """A stored list hash as :class:`Recommendations`; fields it does not know are ignored
    (a newer writer may add some within the same schema version)."""
    g = {_text(k): _text(v) for k, v in raw.items()}
    return Recommendations(
        user_id=user_id,
        items=orjson.loads(g["items"]),
        scores=orjson.loads(g["scores"]),
        source=g["source"],
        model_version=g["model_version"],
        generated_at=int(g["generated_at"]),
        last_event_id=g["last_event_id"],
        last_event_ts=int(g["last_event_ts"]),
        seq=int(g["seq"]),
        epoch=int(g.get("epoch", 0)),
        schema=int(g.get("schema", 0)),
        reasons=orjson.loads(g["reasons"]) if "reasons" in g else None,
        list_id=g.get("list_id") or None,
        arm=g.get("arm") or None,
    )
