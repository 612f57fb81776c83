"""What every command shares: the Typer app, the settings (built once), output helpers."""

from __future__ import annotations

import functools
from typing import NoReturn

import orjson
import typer

from streamrec.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Streaming recommender: Kafka clicks -> SASRec (ONNX) + FAISS -> Redis.")

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
