"""Per-user session state and its update rule (pure).

State is a plain dict so the table's JSON changelog round-trips it exactly::

    {"items": [item_id, …],   # most recent last, at most ``max_len``
     "ids":   [event_id, …],  # recent event ids, at most ``dedup_window``
     "seq":   int,            # events applied so far
     "last_id": str, "last_ts": int}

Item ids are kept as external ids, not model indexes, so state survives a model
swap with a different vocabulary. Applying an event whose id is in ``ids``
returns None: the caller must leave state unchanged (idempotence under
at-least-once redelivery, within the dedup window).
"""

from __future__ import annotations

from typing import Any

Session = dict[str, Any]


def new_session() -> Session:
    return {"items": [], "ids": [], "seq": 0, "last_id": "", "last_ts": 0}


def apply_event(
    state: Session | None,
    event_id: str,
    item_id: str,
    ts: int,
    max_len: int,
    dedup_window: int,
) -> Session | None:
    """New state after the event, or None if the event was already applied."""
    s = state if state is not None else new_session()
    if event_id in s["ids"]:
        return None
    return {
        "items": (s["items"] + [item_id])[-max_len:],
        "ids": (s["ids"] + [event_id])[-dedup_window:],
        "seq": s["seq"] + 1,
        "last_id": event_id,
        "last_ts": ts,
    }
