"""Trending items: click counts from the stream, time-decayed, shared by every worker.

The fallback list for users with no history the model can use. It replaces the
popularity list frozen in the bundle at training time, which knows nothing of
what is being clicked now.

**Forward decay.** A click at time ``t`` adds ``2 ** ((t - L) / half_life)`` to
its item's score, where ``L`` is a landmark time stored beside the set. An
item's decayed count at ``now`` is its score times ``2 ** ((L - now) /
half_life)``: every click's weight halves each half-life, yet an update only
touches the items clicked (no sweep over the set). Ranking by score is ranking
by decayed count. When the exponent grows past :data:`RESCALE_EXPONENT`, the
update rescales the whole set and moves the landmark to now (floats stay
finite).

``t`` is the worker's clock when it applies the batch, not the events'
timestamps: "now" is what trending is about, and a producer's clock (or a
hostile timestamp) cannot push an item to the top for years.

Redis layout (prefix = ``STREAMREC_KEY_PREFIX``, as a hash tag on Redis Cluster:
``serving.keys.meta_prefix``): ``{prefix}trending`` is the sorted set (item id →
score), ``{prefix}trending:landmark`` the landmark in epoch milliseconds. Both are updated once per batch, by one Lua script in the
batch's pipeline; a retried pipeline adds a batch once (a token key, like the
worker counters), and the set keeps its top ``max_items``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.redis_client import AsyncClient, SyncClient

RESCALE_EXPONENT = 64.0  # 2**64 ~ 1.8e19: far below float overflow, rescaled long before
# A decayed count below this is history, not trend: one click ~10 half-lives ago.
MIN_COUNT = 1 / 1024


def trending_key(prefix: str) -> str:
    return f"{prefix}trending"


def landmark_key(prefix: str) -> str:
    return f"{prefix}trending:landmark"


def weight(now_ms: int, landmark_ms: int, half_life_ms: int) -> float:
    """What one click at ``now_ms`` adds to a score relative to ``landmark_ms``."""
    return float(2.0 ** ((now_ms - landmark_ms) / half_life_ms))


def decayed(score: float, now_ms: int, landmark_ms: int, half_life_ms: int) -> float:
    """An item's decayed click count at ``now_ms`` from its stored score."""
    return float(score * 2.0 ** ((landmark_ms - now_ms) / half_life_ms))


# KEYS[1] = set, KEYS[2] = landmark, KEYS[3] = the batch's token; ARGV[1] = now ms,
# ARGV[2] = half-life ms, ARGV[3] = items kept, ARGV[4] = token ttl ms, then (item, clicks)
# pairs. Returns 1, or 0 when the batch was added before (a retried pipeline).
ADD_CLICKS = """
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) == false then return 0 end
local now, half_life = tonumber(ARGV[1]), tonumber(ARGV[2])
local landmark = tonumber(redis.call('GET', KEYS[2]) or '')
if landmark == nil then
  landmark = now
  redis.call('SET', KEYS[2], landmark)
end
local exponent = (now - landmark) / half_life
if exponent > RESCALE then
  redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[1], 'WEIGHTS', tostring(2 ^ -exponent))
  landmark = now
  redis.call('SET', KEYS[2], landmark)
  exponent = 0
end
local w = 2 ^ exponent
for i = 5, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], tostring(w * tonumber(ARGV[i + 1])), ARGV[i])
end
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[3])
if n > keep then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1) end
return 1
""".replace("RESCALE", repr(RESCALE_EXPONENT))


@dataclass(frozen=True, slots=True)
class Trending:
    """The trending list read at ``at_ms``: item ids, most clicked (decayed) first."""

    items: list[str]
    counts: list[float]
    at_ms: int


def parse_top(raw: Sequence[tuple[Any, float]], landmark: Any, now_ms: int,
              half_life_ms: int) -> Trending:
    """A ``ZREVRANGE … WITHSCORES`` answer and the landmark as a :class:`Trending` at ``now_ms``;
    items whose decayed count fell below :data:`MIN_COUNT` are left out."""
    if landmark is None:
        return Trending([], [], now_ms)
    mark = int(landmark)
    items, counts = [], []
    for member, score in raw:
        count = decayed(float(score), now_ms, mark, half_life_ms)
        if count < MIN_COUNT:
            break  # sorted: the rest are older still
        items.append(member.decode() if isinstance(member, bytes) else str(member))
        counts.append(count)
    return Trending(items, counts, now_ms)


def fallback_list(trending: Iterable[str], popular: Iterable[str], seen: set[str],
                  n: int) -> tuple[list[str], int]:
    """A user's fallback list: trending items first, topped up from the popularity list,
    without ``seen`` items or repeats. Returns (items, how many came from trending)."""
    out: list[str] = []
    taken: set[str] = set(seen)
    counts = []
    for source in (trending, popular):
        for item in source:
            if len(out) == n:
                break
            if item not in taken:
                out.append(item)
                taken.add(item)
        counts.append(len(out))
    return out, counts[0]


def clicks_by_item(items: Sequence[str]) -> Mapping[str, int]:
    """The batch's applied clicks, counted per item (what one update adds)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _top_commands(pipe: Any, prefix: str, n: int) -> None:
    pipe.zrevrange(trending_key(prefix), 0, n - 1, withscores=True)
    pipe.get(landmark_key(prefix))


def read_trending(client: SyncClient, prefix: str, half_life_ms: int, n: int) -> Trending:
    """The top ``n`` trending items now (one round trip)."""
    pipe = client.pipeline(transaction=False)
    _top_commands(pipe, prefix, n)
    raw, mark = pipe.execute()
    return parse_top(raw, mark, int(time.time() * 1000), half_life_ms)


class TrendingCache:
    """The trending list a worker last read: refreshed by a timer, never on the hot path.
    Empty until the first read; a failed read keeps the previous list."""

    def __init__(self) -> None:
        self.current = Trending([], [], 0)

    @property
    def items(self) -> list[str]:
        return self.current.items

    async def refresh(self, client: AsyncClient, prefix: str, half_life_ms: int,
                      n: int) -> Trending:
        pipe = client.pipeline(transaction=False)
        _top_commands(pipe, prefix, n)
        raw, mark = await pipe.execute()
        self.current = parse_top(raw, mark, int(time.time() * 1000), half_life_ms)
        return self.current
