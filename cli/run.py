"""Running: a worker, replaying events, reading lists and statuses, the demo."""

from __future__ import annotations

import asyncio
import enum
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.base import RUNNING, app, fail, print_json, settings


class LogLevel(str, enum.Enum):
    """The worker's log levels (``--loglevel``)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


@app.command(rich_help_panel=RUNNING)
def worker(
    bundle: Annotated[Path | None, typer.Option(help="Bundle directory (default: STREAMREC_BUNDLE_PATH).")] = None,
    loglevel: Annotated[LogLevel, typer.Option(case_sensitive=False, help="The log level.")] = LogLevel.info,
) -> None:
    """Run a stream worker (same as ``faust -A streams.app worker``)."""
    s = settings().model_copy(update={"bundle_path": bundle}) if bundle else settings()
    if not (s.bundle_path / "manifest.json").is_file():
        typer.secho(f"warning: no bundle at {s.bundle_path}; the worker serves the last "
                    f"version announced on {s.model_updates_topic}, and waits for one if "
                    "none was", fg=typer.colors.YELLOW, err=True)
    if s.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            fail("STREAMREC_EVENT_LOOP=uvloop (the default) needs the uvloop package: install "
                 "the worker extra (pip install 'streamrec[worker]'), or set "
                 "STREAMREC_EVENT_LOOP=asyncio", 2)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from serving.redis_store import check_redis
    from streamrec.logs import logging_config
    from streams.app import create_app
    from streams.startup import Worker, preflight

    check_redis(s)
    preflight(s)  # the web port free, the topics there with the right partition counts
    config = logging_config(loglevel.value, s.log_format, s.worker_name)
    Worker(create_app(s), loglevel=loglevel.value, logging_config=config,
           quiet=config is not None).execute_from_commandline()


@app.command(rich_help_panel=RUNNING)
def replay(
    data: Annotated[Path, typer.Option(help="Sequence file or MovieLens ratings.dat.")],
    rate: Annotated[float | None, typer.Option(min=0.001, help="Events per second (default: max).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    id_prefix: Annotated[str, typer.Option(help="Prefix for event ids (new prefix = new events).")] = "",
) -> None:
    """Send a dataset as click events to the clicks topic."""
    from streamrec.kafka import ensure_topics
    from streams.replay import replay as run
    from training.data.sequences import load_dataset

    s = settings()
    ds = load_dataset(data)
    seqs = [ds.vocab.decode(x) for x in ds.seqs]
    asyncio.run(ensure_topics(s))
    stats = asyncio.run(run(s, s.clicks_topic, ds.users, seqs, rate=rate, id_prefix=id_prefix,
                            limit=limit))
    typer.echo(f"sent {stats.sent} events in {stats.seconds:.1f}s "
               f"({stats.sent / max(stats.seconds, 1e-9):.0f}/s) to {s.clicks_topic}")


@app.command(rich_help_panel=RUNNING)
def recs(
    user_id: str,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a user's current recommendations from Redis."""
    from serving.reader import RecsReader

    s = settings()
    r = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix,
                         s.redis_cluster).get_recommendations(user_id)
    if r is None:
        fail(f"no recommendations for user {user_id!r} (never seen, or expired)")
    if json_out:
        print_json(r.to_dict())
        return
    typer.echo(f"user {r.user_id}: model {r.model_version} ({r.source}), after event "
               f"{r.last_event_id} (#{r.seq})")
    for rank, (item, score) in enumerate(zip(r.items, r.scores, strict=True), 1):
        typer.echo(f"  {rank:3d}. {item}" + (f"  {score:.3f}" if score is not None else ""))


@app.command(rich_help_panel=RUNNING)
def status(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object (every field).")] = False,
) -> None:
    """Every live worker's status (Redis) and event-to-Redis latency percentiles (its /metrics):
    a table, or with --json every field."""
    from serving.latency import fields_from_prometheus, percentiles, scrape
    from serving.online import from_prometheus
    from serving.reader import RecsReader

    s = settings()
    statuses = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix,
                                  s.redis_cluster).worker_statuses()
    report: dict[str, dict[str, object]] = {}
    for wid, fields in statuses.items():
        latency: dict[str, object] = {}
        online: dict[str, object] = {}
        if "web" in fields:
            try:
                text = scrape(fields["web"], token=next(iter(s.web_token_values), None))
                latency = dict(percentiles(fields_from_prometheus(text)))
                online = dict(from_prometheus(text))
            except OSError as e:
                latency = {"unreachable": f"{fields['web']}: {e}"}
        report[wid] = {**fields, "latency_ms": latency, "online": online}
    if json_out:
        print_json({"workers": report})
        return
    if not report:
        typer.echo("no live worker")
        return
    from cli.status import table

    typer.echo(table(report, int(time.time() * 1000)))


@app.command(rich_help_panel=RUNNING)
def demo(
    users: Annotated[int, typer.Option(min=10)] = 2000,
    items: Annotated[int, typer.Option(min=10)] = 1000,
    train_minutes: Annotated[float, typer.Option(min=0.1)] = 2.5,
    rate: Annotated[float, typer.Option(min=0.0, help="Replay rate, events/s (0 = full speed); the default is below one local worker's capacity.")] = 500.0,
) -> None:
    """The main job end to end on local services: data, training, worker, replay, summary."""
    from cli.demo import run_demo

    run_demo(settings(), users=users, items=items, train_minutes=train_minutes, rate=rate or None)
