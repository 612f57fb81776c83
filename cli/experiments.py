"""Experiments and canaries: ``experiment start|report|stop|list``, ``canary watch``
(:mod:`serving.rollout`)."""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from cli.base import MODELS, app, fail, print_json, settings
from streamrec.errors import ConfigError

if TYPE_CHECKING:
    from serving.experiments import Experiment

experiment_app = typer.Typer(no_args_is_help=True, help="Online experiments: A/B and interleaved.")
canary_app = typer.Typer(no_args_is_help=True, help="The canary controller.")
app.add_typer(experiment_app, name="experiment", rich_help_panel=MODELS)
app.add_typer(canary_app, name="canary", rich_help_panel=MODELS)


class Mode(str, Enum):
    ab = "ab"
    interleave = "interleave"


@experiment_app.command("start")
def start(
    name: Annotated[str, typer.Argument(help="The experiment's name (also the default salt).")],
    arm: Annotated[list[str], typer.Option(help="NAME=VERSION[:WEIGHT][:ranker=on|off|auto][:mmr=λ]; VERSION 'current' is the announced one. Repeat per arm.")],
    mode: Annotated[Mode, typer.Option(help="ab: each user in one arm; interleave: team draft of two arms.")] = Mode.ab,
    salt: Annotated[str, typer.Option(help="The assignment hash's salt (default: the name).")] = "",
) -> None:
    """Start an experiment: every worker loads its arms and writes each user's list with its arm."""
    from serving.experiments import parse_arm
    from serving.rollout import start_experiment

    try:
        arms = [parse_arm(a) for a in arm]
        exp = asyncio.run(start_experiment(settings(), name, arms, mode.value, salt))
    except ConfigError as e:
        fail(str(e), 2)
    typer.echo(f"started {exp.name} ({exp.mode}): "
               + ", ".join(f"{a.name}={a.version}" + (f":{a.weight}" if exp.mode == "ab" else "")
                           for a in exp.arms))


@experiment_app.command("report")
def report(
    name: Annotated[str, typer.Argument()],
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999)] = 0.95,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per-arm online HR@10 and NDCG@10 with intervals, and the test between the arms."""
    from serving.rollout import experiment_records, format_report, read_counts
    from serving.rollout import report as build

    _, known = asyncio.run(experiment_records(settings()))
    if name not in known:
        fail(f"no experiment named {name!r}" + (f" (known: {', '.join(known)})" if known else ""), 2)
    counts, wins = read_counts(settings(), name)
    r = build(known[name], counts, wins, confidence)
    print_json(r) if json_out else typer.echo(format_report(r))


@experiment_app.command("stop")
def stop(
    name: Annotated[str, typer.Argument()],
    promote: Annotated[str | None, typer.Option(help="Announce this arm's version to the whole fleet first.")] = None,
) -> None:
    """Stop an experiment; every user gets the fleet's version again (or the promoted arm's)."""
    from serving.rollout import stop_experiment

    try:
        exp = asyncio.run(stop_experiment(settings(), name, promote))
    except ConfigError as e:
        fail(str(e), 2)
    typer.echo(f"{exp.name}: {exp.decision}")


@experiment_app.command("list")
def list_cmd() -> None:
    """Every experiment, its state and its last decision."""
    from serving.rollout import experiment_records

    _, known = asyncio.run(experiment_records(settings()))
    for e in known.values():
        typer.echo(experiment_row(e))
    if not known:
        typer.echo("(no experiments)")


def experiment_row(e: Experiment) -> str:
    arms = ", ".join(f"{a.name}={a.version}" + (f":{a.weight}" if e.mode == "ab" else "")
                     + (f":{a.overrides()}" if a.overrides() else "") for a in e.arms)
    kind = "canary" if e.canary is not None else e.mode
    return f"{e.state:<8} {e.name}  {kind}  {arms}" + (f"  {e.decision}" if e.decision else "")


@canary_app.command("watch")
def watch(
    once: Annotated[bool, typer.Option(help="Decide once and exit (a cron job); default: until no canary runs.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between looks.")] = 10.0,
) -> None:
    """Promote the running canary when it is not worse than control, roll it back when it is."""
    from serving.rollout import canary_step

    while True:
        step = asyncio.run(canary_step(settings()))
        if step is None:
            typer.echo("no canary is running")
            return
        exp, d = step
        typer.echo(f"{exp.name}: {d.action}: {d.why}")
        if once or d.action != "wait":
            return
        time.sleep(interval)
