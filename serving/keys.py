"""Redis key layout, in one place (documented in docs/architecture.md, "Redis layout").

Every key but the lists takes the *meta* prefix (:func:`meta_prefix`): the key
prefix itself, and on Redis Cluster the key prefix as a hash tag.

A list hash carries ``schema``, the version of its layout. Within a version,
fields are only ever added: a reader must ignore fields it does not know, and
may rely on every field the version documents. A change that removes or
redefines a field bumps the version. Lists written before versioning have no
``schema`` field (read as 0; same fields as version 1).
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def meta_prefix(prefix: str, cluster: bool) -> str:
    """The prefix of every key but the lists: ``prefix`` itself, and on Redis Cluster
    ``prefix`` as a hash tag, ``{streamrec:}`` (``{streamrec}`` for an empty prefix).

    Redis Cluster runs a script only over keys of one hash slot. The tag puts a worker's
    status hash and batch tokens, the trending set, the epoch counter and the experiments'
    counts in one slot, so each script that counts a batch once finds its keys together.
    The lists keep ``prefix`` (no tag): they spread over every slot.
    """
    if not cluster:
        return prefix
    return "{" + (prefix or "streamrec") + "}"


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
