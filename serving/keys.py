"""Redis key layout, in one place (documented in docs/architecture.md, "Redis layout").

A list hash carries ``schema``, the version of its layout. Within a version,
fields are only ever added: a reader must ignore fields it does not know, and
may rely on every field the version documents. A change that removes or
redefines a field bumps the version. Lists written before versioning have no
``schema`` field (read as 0; same fields as version 1).
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def recs_key(prefix: str, user_id: str) -> str:
    """Hash with one user's current list."""
    return f"{prefix}recs:{user_id}"


def worker_key(prefix: str, worker_id: str) -> str:
    """Hash with one worker's counters and served model version."""
    return f"{prefix}worker:{worker_id}"


def workers_set(prefix: str) -> str:
    """Set of worker ids that have reported status."""
    return f"{prefix}workers"


def batch_token_key(prefix: str, worker_id: str, batch_id: str) -> str:
    """Marks a batch's counters as added (short TTL), so a retried write counts once."""
    return f"{prefix}batch:{worker_id}:{batch_id}"


def epoch_key(prefix: str) -> str:
    """Counter of fencing epochs: each partition assignment of any worker takes the next."""
    return f"{prefix}epoch"


def experiment_key(prefix: str, name: str) -> str:
    """Hash with an experiment's counts, ``{arm}:{sum}`` fields added by every worker."""
    return f"{prefix}experiment:{name}"
