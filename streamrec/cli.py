"""The ``streamrec`` command line. Each command is a thin shell over a package function."""

from __future__ import annotations

import asyncio
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer

from streamrec.errors import StreamrecError
from streamrec.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Streaming recommender: Kafka clicks -> SASRec (ONNX) + FAISS -> Redis.")


class Loss(str, Enum):
    ce = "ce"
    sampled = "sampled"
    bce = "bce"


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _print_json(obj: object) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


@app.command()
def worker(
    bundle: Annotated[Optional[Path], typer.Option(help="Bundle directory (default: STREAMREC_BUNDLE_PATH).")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a stream worker (same as ``faust -A streams.app worker``)."""
    settings = Settings(bundle_path=bundle) if bundle else Settings()
    if not (settings.bundle_path / "manifest.json").is_file():
        _fail(f"no model bundle at {settings.bundle_path} (no manifest.json): "
              "train one with 'streamrec train --out DIR' or set STREAMREC_BUNDLE_PATH")
    from faust.worker import Worker

    from streams.factory import create_app

    Worker(create_app(settings), loglevel=loglevel).execute_from_commandline()


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Output sequence file.")],
    users: Annotated[int, typer.Option(min=1)] = 2000,
    items: Annotated[int, typer.Option(min=10)] = 1000,
    seed: int = 7,
) -> None:
    """Write a synthetic click log with sequential structure (``user item item …`` per line)."""
    from training.data import write_sequences
    from training.synthetic import SyntheticSpec, generate as gen

    data = gen(SyntheticSpec(users=users, items=items, seed=seed))
    write_sequences(out, data.users, [data.vocab.decode(s) for s in data.seqs])
    typer.echo(f"wrote {len(data.users)} users, {data.num_interactions} clicks to {out}")


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="Sequence file or MovieLens ratings.dat.")] = None,
    synthetic: Annotated[bool, typer.Option(help="Train on generated data instead of --data.")] = False,
    out: Annotated[Path, typer.Option(help="Bundle directory to write (replaced atomically).")] = Path("var/bundles/current"),
    epochs: Annotated[int, typer.Option(min=1)] = 200,
    max_minutes: Annotated[Optional[float], typer.Option(min=0.1, help="Wall-clock budget.")] = None,
    patience: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option(min=1e-6, max=1.0)] = 1e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 0.0,
    loss: Loss = Loss.ce,
    negatives: Annotated[int, typer.Option(min=1)] = 256,
    max_len: Annotated[int, typer.Option(min=2)] = 50,
    dim: Annotated[int, typer.Option(min=4)] = 64,
    layers: Annotated[int, typer.Option(min=1)] = 2,
    heads: Annotated[int, typer.Option(min=1)] = 2,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.2,
    seed: int = 42,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Train SASRec, evaluate (full ranking), export a bundle."""
    if (data is None) == (not synthetic):
        _fail("give exactly one of --data PATH or --synthetic", 2)
    if dim % heads:
        _fail(f"--dim {dim} must be divisible by --heads {heads}", 2)
    from training.data import load_dataset
    from training.pipeline import train_and_export
    from training.synthetic import generate as gen
    from training.train import TrainConfig

    dataset = gen() if synthetic else load_dataset(data)  # type: ignore[arg-type]
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       loss=loss.value, negatives=negatives, patience=patience,
                       max_minutes=max_minutes, seed=seed)
    mcfg = {"max_len": max_len, "dim": dim, "layers": layers, "heads": heads, "dropout": dropout}
    report = train_and_export(dataset, out, mcfg, tcfg, progress=not json_out)
    if json_out:
        _print_json(report.to_dict())
        return
    typer.echo(f"bundle {report.manifest.version} -> {out}")
    typer.echo(f"trained {report.epochs} epochs (best {report.best_epoch}) in {report.seconds:.1f}s")
    for name, m in (("sasrec valid", report.valid), ("sasrec test", report.test),
                    ("popularity test", report.popularity_test)):
        typer.echo(f"  {name:16s} HR@10 {m['hr@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}")


@app.command()
def replay(
    data: Annotated[Path, typer.Option(help="Sequence file or MovieLens ratings.dat.")],
    rate: Annotated[Optional[float], typer.Option(min=0.001, help="Events per second (default: max).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many events.")] = None,
    id_prefix: Annotated[str, typer.Option(help="Prefix for event ids (new prefix = new events).")] = "",
) -> None:
    """Send a dataset as click events to the clicks topic."""
    from streams.admin import ensure_topics
    from streams.replay import replay as run
    from training.data import load_dataset

    settings = Settings()
    ds = load_dataset(data)
    seqs = [ds.vocab.decode(s) for s in ds.seqs]
    asyncio.run(ensure_topics(settings))
    stats = asyncio.run(run(settings.kafka_bootstrap, settings.clicks_topic, ds.users, seqs,
                            rate=rate, id_prefix=id_prefix, limit=limit))
    typer.echo(f"sent {stats.sent} events in {stats.seconds:.1f}s "
               f"({stats.sent / max(stats.seconds, 1e-9):.0f}/s) to {settings.clicks_topic}")


@app.command()
def recs(
    user_id: str,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a user's current recommendations from Redis."""
    from serving.reader import RecsReader

    s = Settings()
    r = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix).get_recommendations(user_id)
    if r is None:
        _fail(f"no recommendations for user {user_id!r} (never seen, or expired)")
        return
    if json_out:
        _print_json(r.to_dict())
        return
    typer.echo(f"user {r.user_id}: model {r.model_version} ({r.source}), after event "
               f"{r.last_event_id} (#{r.seq})")
    for rank, (item, score) in enumerate(zip(r.items, r.scores, strict=True), 1):
        typer.echo(f"  {rank:3d}. {item}" + (f"  {score:.3f}" if score is not None else ""))


@app.command()
def status() -> None:
    """Print every worker's status hash from Redis."""
    import redis

    from serving.keys import worker_key, workers_set

    s = Settings()
    client = redis.Redis.from_url(s.redis_url.get_secret_value(), decode_responses=True)
    ids = sorted(client.smembers(workers_set(s.key_prefix)))
    if not ids:
        typer.echo("no worker has reported")
    for wid in ids:
        typer.echo(f"{wid}: {client.hgetall(worker_key(s.key_prefix, wid))}")


@app.command()
def demo(
    users: Annotated[int, typer.Option(min=10)] = 2000,
    items: Annotated[int, typer.Option(min=10)] = 1000,
    train_minutes: Annotated[float, typer.Option(min=0.1)] = 2.5,
) -> None:
    """The main job end to end on local services: data, training, worker, replay, summary."""
    from streamrec.demo import run_demo

    run_demo(Settings(), users=users, items=items, train_minutes=train_minutes)


def main() -> None:
    try:
        app()
    except StreamrecError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
