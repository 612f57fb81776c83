"""Models: publish a bundle, list the stored versions, roll back (:mod:`serving.registry`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from cli.base import MODELS, app, fail, settings


@app.command("publish", rich_help_panel=MODELS)
def publish_cmd(bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory.")]) -> None:
    """Validate a bundle, copy it into the store, and announce it to every worker."""
    from serving.registry import publish_bundle

    if not (bundle_dir / "manifest.json").is_file():
        fail(f"{bundle_dir} is not a bundle directory (no manifest.json)", 2)
    a = asyncio.run(publish_bundle(settings(), bundle_dir))
    typer.echo(f"announced {a.version} ({a.uri})")


@app.command(rich_help_panel=MODELS)
def models() -> None:
    """List stored versions with their metrics; mark the current one."""
    from serving.registry import stored_versions

    versions = asyncio.run(stored_versions(settings()))
    for v in versions:
        typer.echo(v.row())
    if not any(v.current for v in versions):
        typer.echo("(nothing announced yet)")


@app.command(rich_help_panel=MODELS)
def rollback(version: Annotated[str | None, typer.Argument(help="Default: the version before the current one.")] = None) -> None:
    """Re-announce an earlier version; every worker validates and switches to it."""
    from serving.registry import rollback as run

    a = asyncio.run(run(settings(), version))
    typer.echo(f"rolled back to {a.version}")
