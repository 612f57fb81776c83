"""Models: publish a bundle, list the stored versions, roll back (:mod:`serving.registry`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from cli.base import MODELS, app, fail, settings


@app.command("publish", rich_help_panel=MODELS)
def publish_cmd(
    bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory.")],
    canary: Annotated[int | None, typer.Option(min=1, max=99, help="Serve it to this % of users against the current version first; `streamrec canary watch` promotes or rolls it back.")] = None,
    margin: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="With --canary: HR@10 it may lose (default STREAMREC_CANARY_MARGIN).")] = None,
    confidence: Annotated[float | None, typer.Option(min=0.5, max=0.999, help="With --canary (default STREAMREC_CANARY_CONFIDENCE).")] = None,
    min_clicks: Annotated[int | None, typer.Option(min=1, help="With --canary: per arm before a decision (default STREAMREC_CANARY_MIN_CLICKS).")] = None,
    max_clicks: Annotated[int | None, typer.Option(min=1, help="With --canary: per arm, then an undecided canary is rolled back (default STREAMREC_CANARY_MAX_CLICKS).")] = None,
) -> None:
    """Validate a bundle, copy it into the store, and announce it to every worker (or start it as a canary)."""
    from serving.registry import publish_bundle

    if not (bundle_dir / "manifest.json").is_file():
        fail(f"{bundle_dir} is not a bundle directory (no manifest.json)", 2)
    if canary is None:
        if any(x is not None for x in (margin, confidence, min_clicks, max_clicks)):
            fail("--margin, --confidence, --min-clicks and --max-clicks need --canary", 2)
        a = asyncio.run(publish_bundle(settings(), bundle_dir))
        typer.echo(f"announced {a.version} ({a.uri})")
        return
    from serving import experiments
    from serving.rollout import policy_from, publish_canary
    from streamrec.errors import ConfigError

    try:
        policy = experiments.check_policy(policy_from(settings(), margin=margin, confidence=confidence,
                                                      min_clicks=min_clicks, max_clicks=max_clicks))
        exp = asyncio.run(publish_canary(settings(), bundle_dir, canary, policy))
    except ConfigError as e:
        fail(str(e), 2)
    typer.echo(f"started canary {exp.name}: {exp.arms[1].version} on {canary}% of users against "
               f"{exp.arms[0].version}; `streamrec canary watch` decides")


@app.command(rich_help_panel=MODELS)
def models() -> None:
    """List stored versions with their metrics; mark the current one."""
    from cli.experiments import experiment_row
    from serving.registry import stored_versions
    from serving.rollout import experiment_records

    versions = asyncio.run(stored_versions(settings()))
    for v in versions:
        typer.echo(v.row())
    if not any(v.current for v in versions):
        typer.echo("(nothing announced yet)")
    _, known = asyncio.run(experiment_records(settings()))
    if known:
        typer.echo("experiments:")
        for e in known.values():
            typer.echo(f"  {experiment_row(e)}")


@app.command(rich_help_panel=MODELS)
def rollback(version: Annotated[str | None, typer.Argument(help="Default: the version before the current one.")] = None) -> None:
    """Re-announce an earlier version; every worker validates and switches to it."""
    from serving.registry import rollback as run

    a = asyncio.run(run(settings(), version))
    typer.echo(f"rolled back to {a.version}")
