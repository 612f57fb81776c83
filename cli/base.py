"""What every command shares: the Typer app, the settings (built once), output helpers."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Annotated, NoReturn

import orjson
import typer

from streamrec.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Streaming recommender: Kafka clicks -> SASRec (ONNX) + FAISS -> Redis.")


def version() -> str:
    """The installed distribution's version (pyproject.toml's), or the source tree's."""
    try:
        return metadata.version("streamrec")
    except metadata.PackageNotFoundError:
        from streamrec import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"streamrec {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit.")] = False,
) -> None:
    """Streaming recommender: Kafka clicks -> SASRec (ONNX) + FAISS -> Redis."""


# Help panels, one per job (``streamrec --help`` groups the commands by these).
RUNNING = "Running"
MODELS = "Models"
DATA = "Data and evaluation"
BENCHMARKS = "Benchmarks"


@functools.cache
def settings() -> Settings:
    """The settings from the environment, built once per process (on first use: commands
    that need none, such as ``generate``, work with any environment)."""
    return Settings()


def fail(msg: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def print_json(obj: object) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())
