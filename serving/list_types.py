"""What a recommendation list is, apart from how it is computed or stored (pure types).

``Ranked`` is a computed list; ``Provenance`` says which session state it
reflects (the store orders writes by it).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_MODEL = "model"
SOURCE_POPULAR = "popular"  # no usable history: the bundle's training-time popularity
SOURCE_TRENDING = "trending"  # no usable history: clicks of the last hours (serving.trending)


@dataclass(frozen=True, slots=True)
class Ranked:
    """One user's final list: external item ids, their scores, and where it came from."""

    items: list[str]
    scores: list[float]
    source: str
    reasons: list[str] | None = None  # one per item (serving.rerank.REASONS)


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a stored list reflects: the user's session after event ``seq``."""

    user_id: str
    seq: int
    last_event_id: str
    last_event_ts: int
