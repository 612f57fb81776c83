"""The ``streamrec`` command line: one module per job, each command a thin shell over a package.

* :mod:`cli.run`: running (worker, replay, recs, status, demo)
* :mod:`cli.models`: models (publish, models, rollback)
* :mod:`cli.data`: data and evaluation (generate, train, evaluate)
* :mod:`cli.bench`: benchmarks (bench, bench-index, bench-swap, bench-state)
"""

from __future__ import annotations

import importlib
import sys

import typer
from pydantic import ValidationError
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from cli.base import app
from streamrec.errors import StreamrecError

__all__ = ["app", "main"]

# Importing a job's module registers its commands; this order is the order of the help panels.
for _job in ("run", "models", "experiments", "data", "bench", "simulate", "fidelity", "retrain"):
    importlib.import_module(f"cli.{_job}")


def main() -> None:
    try:
        app()
    except StreamrecError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except (RedisConnectionError, RedisTimeoutError, RedisClusterException) as e:  # refused credentials too
        typer.secho(f"error: {_redis_failure(e)}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except ValidationError as e:  # settings from the environment
        from streamrec.settings import describe_validation_error

        typer.secho(f"error: invalid settings: {describe_validation_error(e)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def _redis_failure(e: Exception) -> str:
    """One line for a command whose Redis failed: refused credentials (AuthenticationError
    is a ConnectionError; a cluster client wraps it), a node not in cluster mode, or down."""
    from serving.redis_store import cluster_refusal

    cluster = isinstance(e, RedisClusterException)
    if isinstance(e, RedisClusterException):
        why = cluster_refusal(e)
    else:
        why = "credentials" if isinstance(e, RedisAuthenticationError) else None
    if why == "credentials":
        return (f"Redis{' Cluster' if cluster else ''} refused the credentials ({e}); check the user and "
                "password in STREAMREC_REDIS_URL or STREAMREC_REDIS_PASSWORD_FILE")
    if why == "not_cluster":
        return ("STREAMREC_REDIS_CLUSTER=true, but the node STREAMREC_REDIS_URL names is not in cluster "
                "mode (set STREAMREC_REDIS_CLUSTER=false for a single Redis)")
    return f"Redis is unreachable ({type(e).__name__}: {e}); check STREAMREC_REDIS_URL and that Redis runs"
