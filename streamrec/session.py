"""Per-user session state and its update rule (pure).

State is a plain dict so the table's JSON changelog round-trips it exactly::

    {"items": [item_id, …],   # most recent last, at most ``max_len``
     "ids":   [event_id, …],  # recent event ids, at most ``dedup_window``
     "seq":   int,            # events applied so far
     "last_id": str, "last_ts": int,
     "p": int, "o": int,      # source partition and offset of the last applied event
     "g": int}                # the generation of that partition's log (absent: 0)

Item ids are kept as external ids, not model indexes, so state survives a model
swap with a different vocabulary. Applying an event that was applied before
returns None, and the caller must leave state unchanged (idempotence under
at-least-once delivery). An event counts as applied before when

* it is a redelivery by Kafka: same partition and log generation, offset not
  after the last applied one (exact, however old: a worker that died after
  applying a batch but before committing its offsets has it redelivered). A log
  that begins again below the applied offsets starts a new generation
  (:mod:`streams.log_resets`); or
* its id is among the last ``dedup_window`` ids (a producer that sent the same
  event twice; a re-send older than the window is applied again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamrec.settings import Settings

Session = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionRules:
    """What the workers apply, and what training from the topic must apply too.

    ``max_len``: items kept per session; ``dedup_window``: recent event ids kept
    for duplicate detection; ``max_event_bytes``: larger records are rejected.
    """

    max_len: int
    dedup_window: int
    max_event_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionRules:
        return cls(settings.session_max_len, settings.dedup_window, settings.max_event_bytes)

    @classmethod
    def defaults(cls) -> SessionRules:
        """The rules of a worker started without overrides (the settings' defaults)."""
        from streamrec.settings import Settings

        f = Settings.model_fields
        return cls(f["session_max_len"].default, f["dedup_window"].default,
                   f["max_event_bytes"].default)


def new_session() -> Session:
    return {"items": [], "ids": [], "seq": 0, "last_id": "", "last_ts": 0, "p": -1, "o": -1}


def offset_applied(s: Session, partition: int, offset: int, generation: int = 0) -> bool:
    """The offset rule: ``offset`` of ``partition`` (in that log's ``generation``) is at or
    before the last one applied to ``s`` from it."""
    return (partition >= 0 and partition == s.get("p") and generation == s.get("g", 0)
            and offset <= s.get("o", -1))


def already_applied(s: Session, event_id: str, partition: int = -1, offset: int = -1,
                    generation: int = 0) -> bool:
    """Whether the event was applied to ``s`` before (a redelivery, or a recent id)."""
    return offset_applied(s, partition, offset, generation) or event_id in s["ids"]


def apply_event(
    state: Session | None,
    event_id: str,
    item_id: str,
    ts: int,
    max_len: int,
    dedup_window: int,
    partition: int = -1,
    offset: int = -1,
    generation: int = 0,
) -> Session | None:
    """New state after the event, or None if the event was already applied.

    ``generation`` is that of the partition's log (:mod:`streams.log_resets`).
    """
    s = state if state is not None else new_session()
    if already_applied(s, event_id, partition, offset, generation):
        return None
    new = {
        "items": (s["items"] + [item_id])[-max_len:],
        "ids": (s["ids"] + [event_id])[-dedup_window:],
        "seq": s["seq"] + 1,
        "last_id": event_id,
        "last_ts": ts,
        "p": partition,
        "o": offset,
    }
    if generation:
        new["g"] = generation
    return new
