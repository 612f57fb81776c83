"""Redis key layout, in one place (documented in the README)."""

from __future__ import annotations


def recs_key(prefix: str, user_id: str) -> str:
    """Hash with one user's current list."""
    return f"{prefix}recs:{user_id}"


def worker_key(prefix: str, worker_id: str) -> str:
    """Hash with one worker's counters and served model version."""
    return f"{prefix}worker:{worker_id}"


def workers_set(prefix: str) -> str:
    """Set of worker ids that have reported status."""
    return f"{prefix}workers"
