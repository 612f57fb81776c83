"""The ``streamrec`` command line. Each command is a thin shell over a package function."""

from __future__ import annotations

import asyncio
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer
from pydantic import ValidationError

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
        typer.secho(f"warning: no bundle at {settings.bundle_path}; the worker serves the last "
                    f"version announced on {settings.model_updates_topic}, and waits for one if "
                    "none was", fg=typer.colors.YELLOW, err=True)
    from faust.worker import Worker

    from streams.factory import check_redis, create_app

    check_redis(settings)
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
    from training.synthetic import SyntheticSpec
    from training.synthetic import generate as gen

    data = gen(SyntheticSpec(users=users, items=items, seed=seed))
    write_sequences(out, data.users, [data.vocab.decode(s) for s in data.seqs])
    typer.echo(f"wrote {len(data.users)} users, {data.num_interactions} clicks to {out}")


class ModelName(str, Enum):
    sasrec = "sasrec"
    bpr = "bpr"
    pop = "pop"


class IndexType(str, Enum):
    auto = "auto"
    flat_ip = "flat_ip"
    ivf_ip = "ivf_ip"
    hnsw_ip = "hnsw_ip"


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Option(help="Sequence file or MovieLens ratings.dat.")] = None,
    synthetic: Annotated[bool, typer.Option(help="Train on generated data.")] = False,
    from_topic: Annotated[bool, typer.Option(help="Read sequences from the clicks topic.")] = False,
    since: Annotated[Optional[int], typer.Option(help="With --from-topic: first event time, epoch ms.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML config (training/configs/*.toml).")] = None,
    model: Annotated[Optional[ModelName], typer.Option(help="Overrides the config's model.")] = None,
    out: Annotated[Path, typer.Option(help="Bundle directory to write (replaced atomically).")] = Path("var/bundles/current"),
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    max_minutes: Annotated[Optional[float], typer.Option(min=0.1, help="Wall-clock budget.")] = None,
    patience: Annotated[Optional[int], typer.Option(min=1)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    lr: Annotated[Optional[float], typer.Option(min=1e-6, max=1.0)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(min=0.0)] = None,
    loss: Annotated[Optional[Loss], typer.Option()] = None,
    negatives: Annotated[Optional[int], typer.Option(min=1)] = None,
    hard_negatives: Annotated[Optional[int], typer.Option(min=0, help="With --loss sampled.")] = None,
    refit: Annotated[Optional[bool], typer.Option("--refit/--no-refit", help="Retrain on train+valid for the selected epochs.")] = None,
    mask_seen: Annotated[Optional[bool], typer.Option("--mask-seen/--no-mask-seen", help="With --loss ce: leave each position's history out of its softmax.")] = None,
    max_len: Annotated[Optional[int], typer.Option(min=2)] = None,
    dim: Annotated[Optional[int], typer.Option(min=4)] = None,
    layers: Annotated[Optional[int], typer.Option(min=1)] = None,
    heads: Annotated[Optional[int], typer.Option(min=1)] = None,
    dropout: Annotated[Optional[float], typer.Option(min=0.0, max=0.9)] = None,
    lowpass: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Share of the causal low-pass branch per block (0 = plain SASRec).")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    index_type: Annotated[IndexType, typer.Option(help="Item index: exact (flat_ip), IVF or HNSW; auto = exact below 100,000 items, IVF from there.")] = IndexType.auto,
    publish: Annotated[bool, typer.Option(help="Publish the bundle and announce it to workers.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Train a model (SASRec by default, or the pop/BPR baselines), evaluate, export a bundle."""
    if sum([data is not None, synthetic, from_topic]) != 1:
        _fail("give exactly one of --data PATH, --synthetic or --from-topic", 2)
    from training.config import load_config, resolve
    from training.pipeline import run_baseline, train_and_export

    chosen, mcfg, tcfg, bcfg = resolve(
        load_config(config), model.value if model else None,
        sasrec={"max_len": max_len, "dim": dim, "layers": layers, "heads": heads, "dropout": dropout,
                "lowpass": lowpass},
        train={"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
               "loss": loss.value if loss else None, "negatives": negatives,
               "hard_negatives": hard_negatives, "refit": refit, "mask_seen": mask_seen, "patience": patience,
               "max_minutes": max_minutes, "seed": seed},
        bpr={"dim": dim, "epochs": epochs, "batch_size": batch_size, "lr": lr, "patience": patience,
             "seed": seed})
    if mcfg.get("dim", 64) % mcfg.get("heads", 2):
        _fail(f"dim {mcfg.get('dim', 64)} must be divisible by heads {mcfg.get('heads', 2)}", 2)
    dataset = _training_data(data, synthetic, from_topic, since)
    if chosen != "sasrec":
        report = run_baseline(chosen, dataset, bcfg, progress=not json_out)
        _print_json(report) if json_out else _print_metrics(report)
        return
    result = train_and_export(dataset, out, mcfg, tcfg, progress=not json_out,
                              index_type=index_type.value).to_dict()
    if publish:
        result["announced"] = _publish(out).uri
    _print_json(result) if json_out else _print_metrics(result)


def _publish(bundle_dir: Path):  # type: ignore[no-untyped-def]
    from streams.models import publish_bundle

    return asyncio.run(publish_bundle(Settings(), bundle_dir))


@app.command("publish")
def publish_cmd(bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory.")]) -> None:
    """Validate a bundle, copy it into the store, and announce it to every worker."""
    if not (bundle_dir / "manifest.json").is_file():
        _fail(f"{bundle_dir} is not a bundle directory (no manifest.json)", 2)
    a = _publish(bundle_dir)
    typer.echo(f"announced {a.version} ({a.uri})")


@app.command()
def models() -> None:
    """List stored versions with their metrics; mark the current one."""
    from serving.registry import BundleStore
    from streams.models import announcement_history

    s = Settings()
    history = asyncio.run(announcement_history(s))
    current = history[-1].version if history else None
    for m in BundleStore(s.bundle_store).versions():
        try:
            full = m.metrics["test"]["full"]
            metrics = f"test HR@10 {full['hr@10']:.4f} NDCG@10 {full['ndcg@10']:.4f}"
        except (KeyError, TypeError):
            metrics = "no test metrics"
        mark = "*" if m.version == current else " "
        typer.echo(f"{mark} {m.version}  {m.created_at}  {m.model}  {metrics}")
    if current is None:
        typer.echo("(nothing announced yet)")


@app.command()
def rollback(version: Annotated[Optional[str], typer.Argument(help="Default: the version before the current one.")] = None) -> None:
    """Re-announce an earlier version; every worker validates and switches to it."""
    from serving.registry import BundleStore
    from streams.models import announce, announcement_history

    s = Settings()
    history = [a.version for a in asyncio.run(announcement_history(s))]
    if version is None:
        earlier = [v for v in history if v != (history[-1] if history else None)]
        if not earlier:
            _fail("nothing to roll back to: fewer than two versions were ever announced")
        version = earlier[-1]
    a = BundleStore(s.bundle_store).announcement(version, reason="rollback")
    asyncio.run(announce(s, a))
    typer.echo(f"rolled back to {version}")


def _training_data(data: Optional[Path], synthetic: bool, from_topic: bool, since: Optional[int]):  # type: ignore[no-untyped-def]
    from training.data import load_dataset
    from training.synthetic import generate as gen

    if synthetic:
        return gen()
    if data is not None:
        return load_dataset(data)
    from training.from_topic import read_topic

    s = Settings()
    read = asyncio.run(read_topic(s, s.clicks_topic, since))
    typer.echo(f"read {read.records} records from {s.clicks_topic}: {read.invalid} invalid, "
               f"{read.duplicates} duplicate, {len(read.data.users)} users", err=True)
    return read.data


def _print_metrics(report: dict) -> None:  # type: ignore[type-arg]
    head = {k: v for k, v in report.items() if not isinstance(v, dict)}
    typer.echo("  ".join(f"{k}={v}" for k, v in head.items()))
    for name, block in report.items():
        if isinstance(block, dict):
            for proto, m in block.items():
                if isinstance(m, dict):
                    typer.echo(f"  {name:16s} {proto:8s} HR@10 {m['hr@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}")


class SplitName(str, Enum):
    test = "test"
    valid = "valid"


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: Annotated[Path, typer.Option(help="Sequence file or MovieLens ratings.dat.")],
    split: SplitName = SplitName.test,
    seed: Annotated[int, typer.Option(help="Seed of the sampled protocol's negatives.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate a bundle as served (ONNX + FAISS), full ranking and 100-negative sampled."""
    from training.bundle_eval import evaluate_bundle
    from training.data import load_dataset

    if not (bundle / "manifest.json").is_file():
        _fail(f"{bundle} is not a bundle directory (no manifest.json)", 2)
    result = evaluate_bundle(bundle, load_dataset(data), split.value, seed)
    if json_out:
        _print_json(result)
        return
    typer.echo(f"bundle {result['bundle']}, {result['users']} users, split {split.value}")
    for proto in ("full", "sampled"):
        m = result[proto]
        typer.echo(f"  {proto:8s} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))


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
    stats = asyncio.run(run(settings, settings.clicks_topic, ds.users, seqs,
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
def bench(
    bundle: Annotated[Optional[Path], typer.Option(help="Bundle to serve (default: random Beauty-sized).")] = None,
    rates: Annotated[str, typer.Option(help="Offered rates, events/s, comma-separated; 'max' = as fast as possible.")] = "250,1000,2000,4000,max",
    seconds: Annotated[float, typer.Option(min=1, help="Measurement window per offered rate.")] = 10.0,
    max_events: Annotated[int, typer.Option(min=100, help="Events for the 'max' rate.")] = 30_000,
    workers: Annotated[int, typer.Option(min=1, max=16)] = 1,
    naive: Annotated[bool, typer.Option(help="Also run the naive baseline at 'max' and 1000/s.")] = True,
    users: Annotated[int, typer.Option(min=1)] = 10_000,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-latest.json"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """End-to-end benchmark: throughput, event-to-Redis latency, CPU and memory per worker."""
    try:
        offered = [None if r.strip() == "max" else float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        _fail(f"--rates must be numbers or 'max', comma-separated; got {rates!r}", 2)
    from bench.bundle import random_bundle
    from bench.run import as_dict, measure

    s = Settings()
    logs = Path("var/bench/logs")
    logs.mkdir(parents=True, exist_ok=True)
    path = bundle or random_bundle(Path("var/bench"))
    from serving.bundle import load_bundle

    items = load_bundle(path).manifest.num_items
    plan = [("streamrec", workers, r) for r in offered]
    if naive:
        plan += [("naive", 1, None), ("naive", 1, 1000.0)]
    results = []
    for pipeline, n, rate in plan:
        events = max_events if rate is None else int(rate * seconds)
        if pipeline == "naive":
            events = min(events, 3000)
        r = measure(s, path, pipeline=pipeline, workers=n, rate=rate, events=events,
                    warmup=min(2000, events // 4 + 100), users=users, items=items, log_dir=logs)
        results.append(r)
        if not json_out:
            typer.echo(r.row())
    report = {"bundle": str(path), "items": items, "users": users, "machine": _machine(),
              "results": as_dict(results)}
    fast = max((r.throughput for r in results if r.pipeline == "streamrec" and r.offered_rate is None), default=0)
    slow = max((r.throughput for r in results if r.pipeline == "naive" and r.offered_rate is None), default=0)
    if fast and slow:
        report["throughput_ratio_vs_naive"] = round(fast / slow, 1)
        if not json_out:
            typer.echo(f"throughput ratio vs naive (max rate): {fast / slow:.1f}x")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if json_out:
        _print_json(report)
    else:
        typer.echo(f"wrote {out}")


@app.command("bench-index")
def bench_index(
    sizes: Annotated[str, typer.Option(help="Catalogue sizes, comma-separated.")] = "10000,100000,1000000",
    dim: int = 64,
    ef_construction: Annotated[int, typer.Option(min=8)] = 80,
    ef_search: Annotated[str, typer.Option(help="HNSW efSearch values, comma-separated.")] = "64,128,256",
    nprobe: Annotated[str, typer.Option(help="IVF lists probed per query, comma-separated.")] = "32,64,128",
    spread: Annotated[float, typer.Option(min=0.01, max=10.0, help="Within-cluster spread of the synthetic vectors (0.35 tight, 1.0 overlapping).")] = 0.35,
    hnsw: Annotated[bool, typer.Option("--hnsw/--no-hnsw", help="Also build HNSW (slow at 1M items).")] = True,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-index.json"),
) -> None:
    """Catalogue scaling: exact versus IVF and HNSW search latency and recall@100."""
    from bench.index import as_dict, run

    try:
        ns = [int(x) for x in sizes.split(",")]
        efs = tuple(int(x) for x in ef_search.split(","))
        probes = tuple(int(x) for x in nprobe.split(","))
    except ValueError:
        _fail(f"--sizes, --ef-search and --nprobe must be integers, comma-separated; got "
              f"{sizes!r}, {ef_search!r}, {nprobe!r}", 2)
    if min(ns + list(efs) + list(probes)) < 1:
        _fail("--sizes, --ef-search and --nprobe must be positive", 2)
    results = run(ns, dim, ef_construction=ef_construction, ef_search=efs, nprobe=probes,
                  spread=spread, hnsw=hnsw, on_result=lambda r: typer.echo(r.row()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps({"machine": _machine(), "spread": spread,
                                  "results": as_dict(results)}, option=orjson.OPT_INDENT_2))
    typer.echo(f"wrote {out}")


@app.command("bench-swap")
def bench_swap(
    rate: Annotated[float, typer.Option(min=1)] = 500.0,
    seconds: Annotated[float, typer.Option(min=4)] = 12.0,
) -> None:
    """Swap a Beauty-sized bundle under load: validation time and latency around the swap."""
    from bench.bundle import random_bundle
    from bench.swap import measure_swap

    logs = Path("var/bench/logs")
    logs.mkdir(parents=True, exist_ok=True)
    a = random_bundle(Path("var/bench"), seed=0)
    b = random_bundle(Path("var/bench/b"), seed=1)
    result = measure_swap(Settings(), a, b, rate=rate, seconds=seconds, items=12_101, log_dir=logs)
    _print_json(result)


@app.command("bench-state")
def bench_state() -> None:
    """Bytes per user of session state, and what 10M users would need."""
    from bench.state import session_size

    s = Settings()
    for events in (1, 10, 50, 500):
        r = session_size(events, s.session_max_len, s.dedup_window)
        typer.echo(f"after {events:4d} events: changelog {r['changelog_bytes']:6d} B/user, "
                   f"memory {r['memory_bytes']:6d} B/user -> 10M users: "
                   f"{r['changelog_bytes'] * 1e7 / 2**30:6.1f} GiB changelog, "
                   f"{r['memory_bytes'] * 1e7 / 2**30:6.1f} GiB in memory")


def _machine() -> dict[str, object]:
    import os
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


@app.command()
def demo(
    users: Annotated[int, typer.Option(min=10)] = 2000,
    items: Annotated[int, typer.Option(min=10)] = 1000,
    train_minutes: Annotated[float, typer.Option(min=0.1)] = 2.5,
    rate: Annotated[float, typer.Option(min=0.0, help="Replay rate, events/s (0 = full speed); the default is below one local worker's capacity.")] = 500.0,
) -> None:
    """The main job end to end on local services: data, training, worker, replay, summary."""
    from streamrec.demo import run_demo

    run_demo(Settings(), users=users, items=items, train_minutes=train_minutes, rate=rate or None)


def main() -> None:
    try:
        app()
    except StreamrecError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except ValidationError as e:  # settings from the environment
        typer.secho(f"error: invalid settings: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
