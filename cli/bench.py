"""Benchmarks: end to end, catalogue scaling, hot-swap under load, state size (:mod:`bench`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.base import BENCHMARKS, app, fail, print_json, settings

BENCH_DIR = Path("var/bench")


def _numbers(text: str, what: str, cast: type[int | float]) -> list[int] | list[float]:
    try:
        values = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{what} must be numbers, comma-separated; got {text!r}", 2)
    if not values or min(values) <= 0:
        fail(f"{what} must be positive numbers, comma-separated; got {text!r}", 2)
    return values


@app.command(rich_help_panel=BENCHMARKS)
def bench(
    bundle: Annotated[Path | None, typer.Option(help="Bundle to serve (default: random Beauty-sized).")] = None,
    rates: Annotated[str, typer.Option(help="Offered rates, events/s, comma-separated; 'max' = as fast as possible.")] = "250,1000,2000,4000,max",
    seconds: Annotated[float, typer.Option(min=1, help="Measurement window per offered rate.")] = 10.0,
    max_events: Annotated[int, typer.Option(min=100, help="Events for the 'max' rate.")] = 30_000,
    workers: Annotated[str, typer.Option(
        help="Worker processes, comma-separated: each count runs every rate (e.g. 1,2).")] = "1",
    naive: Annotated[bool, typer.Option(help="Also run the naive baseline at 'max' and 1000/s.")] = True,
    users: Annotated[int, typer.Option(min=1)] = 10_000,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-latest.json"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    new_items: Annotated[int, typer.Option(
        min=0, help="New items on the items topic before each run, clicked like the others "
                    "(a bundle with an item tower; STREAMREC_RERANK_NEW_ITEM_* set the slot).")] = 0,
    profile: Annotated[bool, typer.Option(
        help="Sample each worker with py-spy over the 'max' drain; the top functions and "
             "packages go to the results file, the collapsed stacks beside the logs.")] = False,
) -> None:
    """End-to-end benchmark: throughput, event-to-Redis latency, CPU and memory per worker."""
    parts = [r.strip() for r in rates.split(",") if r.strip()]
    numbers = [p for p in parts if p != "max"]
    by_rate = iter(_numbers(",".join(numbers), "--rates", float) if numbers else [])
    offered = [None if p == "max" else float(next(by_rate)) for p in parts]
    if not offered:
        fail("--rates needs at least one rate (a number or 'max')", 2)
    fleets = [int(n) for n in _numbers(workers, "--workers", int)]
    if max(fleets) > 16:
        fail(f"--workers: at most 16 worker processes; got {workers!r}", 2)
    from bench.run import run_bench, write_results
    from streamrec.errors import ConfigError

    try:
        report = run_bench(settings(), bundle, offered=offered, seconds=seconds,
                           max_events=max_events, workers=fleets, naive=naive, users=users,
                           log_dir=BENCH_DIR / "logs", new_items=new_items, profile=profile,
                           on_result=(lambda r: None) if json_out else (lambda r: typer.echo(r.row())))
    except ConfigError as e:
        fail(str(e), 2)
    write_results(out, report)
    if json_out:
        print_json(report)
        return
    if "throughput_ratio_vs_naive" in report:
        typer.echo(f"throughput ratio vs naive (max rate): {report['throughput_ratio_vs_naive']}x")
    for name, where in report["services"].items():  # type: ignore[attr-defined]
        typer.echo(f"{name}: {where}")
    typer.echo(f"wrote {out}")


@app.command("bench-index", rich_help_panel=BENCHMARKS)
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
    ns = [int(x) for x in _numbers(sizes, "--sizes", int)]
    efs = tuple(int(x) for x in _numbers(ef_search, "--ef-search", int))
    probes = tuple(int(x) for x in _numbers(nprobe, "--nprobe", int))
    from bench.index import as_dict, run
    from bench.run import write_results

    results = run(ns, dim, ef_construction=ef_construction, ef_search=efs, nprobe=probes,
                  spread=spread, hnsw=hnsw, on_result=lambda r: typer.echo(r.row()))
    write_results(out, {"spread": spread, "results": as_dict(results)})
    typer.echo(f"wrote {out}")


@app.command("bench-swap", rich_help_panel=BENCHMARKS)
def bench_swap(
    rate: Annotated[float, typer.Option(min=1)] = 500.0,
    seconds: Annotated[float, typer.Option(min=4)] = 12.0,
) -> None:
    """Swap a Beauty-sized bundle under load: validation time and latency around the swap."""
    from bench.bundle import random_bundle
    from bench.swap import measure_swap

    logs = BENCH_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    a = random_bundle(BENCH_DIR, seed=0)
    b = random_bundle(BENCH_DIR / "b", seed=1)
    print_json(measure_swap(settings(), a, b, rate=rate, seconds=seconds, items=12_101, log_dir=logs))


@app.command("bench-http", rich_help_panel=BENCHMARKS)
def bench_http(
    rate: Annotated[float, typer.Option(min=1, help="Requests per second, offered open-loop.")] = 1000.0,
    seconds: Annotated[float, typer.Option(min=1)] = 10.0,
    users: Annotated[int, typer.Option(min=10)] = 10_000,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-http.json"),
) -> None:
    """The HTTP read API: GET /recs/{user} latency at a fixed request rate on one worker."""
    from bench.bundle import random_bundle
    from bench.http import measure_reads
    from bench.run import write_results

    logs = BENCH_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = measure_reads(settings(), random_bundle(BENCH_DIR), rate=rate, seconds=seconds,
                           users=users, items=12_101, log_dir=logs)
    write_results(out, result)
    print_json(result)
    typer.echo(f"wrote {out}")


@app.command("bench-restart", rich_help_panel=BENCHMARKS)
def bench_restart(
    users: Annotated[int, typer.Option(min=10, help="Users with a session before the restart.")] = 100_000,
    stores: Annotated[str, typer.Option(help="Table stores, comma-separated: memory, rocksdb.")] = "memory,rocksdb",
    kill: Annotated[bool, typer.Option("--kill/--sigterm", help="Stop the first worker with SIGKILL (a crash) instead of SIGTERM (a deploy).")] = False,
    probe: Annotated[int, typer.Option(min=1, help="Users clicked after the restart, whose lists must be fresh.")] = 100,
    events: Annotated[int, typer.Option(min=0, help="Clicks on random users after the restart: the restarted worker's CPU s per 1k events (0: not measured).")] = 0,
    bundle: Annotated[Path | None, typer.Option(help="Bundle to serve (default: random Beauty-sized).")] = None,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-restart.json"),
) -> None:
    """Restart to ready with N users' sessions, on each table store (STREAMREC_TABLE_STORE);
    with --events, CPU per event after it; rocksdb's disk per user after compaction."""
    from bench.bundle import random_bundle
    from bench.restart import as_dict, measure_restart
    from bench.run import write_results
    from streams.table_stores import STORES

    names = [x.strip() for x in stores.split(",") if x.strip()]
    if not names or any(n not in STORES for n in names):
        fail(f"--stores must name stores among {', '.join(STORES)}; got {stores!r}", 2)
    logs = BENCH_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = bundle or random_bundle(BENCH_DIR)
    results = []
    for name in names:
        r = measure_restart(settings(), path, store=name, users=users, probe=min(probe, users),
                            kill=kill, log_dir=logs, events=events)
        typer.echo(r.row())
        results.append(r)
    write_results(out, {"users": users, "results": as_dict(results)})
    typer.echo(f"wrote {out}")


@app.command("bench-items", rich_help_panel=BENCHMARKS)
def bench_items(
    items: Annotated[int, typer.Option(min=1, help="New-item records to send.")] = 2000,
    rate: Annotated[float, typer.Option(min=1, help="Records per second.")] = 200.0,
    bundle: Annotated[Path | None, typer.Option(help="A bundle with an item tower (default: a small synthetic one).")] = None,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-items.json"),
) -> None:
    """New items on the items topic: record timestamp -> retrievable (p50/p95/p99)."""
    from bench.items import measure_items, tower_bundle
    from bench.run import write_results

    path = bundle or tower_bundle(BENCH_DIR)
    if not (path / "item_tower.onnx").is_file():
        fail(f"{path} has no item tower (train with --attributes)", 2)
    logs = BENCH_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = measure_items(settings(), path, items=items, rate=rate, log_dir=logs)
    write_results(out, result)
    print_json(result)
    typer.echo(f"wrote {out}")


@app.command("bench-state", rich_help_panel=BENCHMARKS)
def bench_state(
    measure: Annotated[bool, typer.Option("--measure", help="Also measure: list hashes in Redis written by a worker, sessions in each table store (needs the local services).")] = False,
    top_n: Annotated[str, typer.Option(help="With --measure: STREAMREC_TOP_N values, comma-separated.")] = "10,20,50",
    users: Annotated[int, typer.Option(min=100, help="With --measure: users with a list per top_n.")] = 5000,
    events: Annotated[str, typer.Option(help="With --measure: clicks per user of the measured sessions, comma-separated.")] = "1,10,50,200",
    sessions: Annotated[int, typer.Option(min=1000, help="With --measure: sessions per point.")] = 20_000,
    bundle: Annotated[Path | None, typer.Option(help="With --measure: bundle the worker serves (default: random Beauty-sized).")] = None,
    out: Annotated[Path, typer.Option(help="With --measure: JSON results file.")] = Path("results/bench-state.json"),
) -> None:
    """Bytes per user of session state, and what 10M users would need; with --measure,
    measured bytes per user in Redis (per top_n), the memory store and RocksDB."""
    from bench.state import state_rows

    s = settings()
    for row in state_rows(s.session_max_len, s.dedup_window):
        typer.echo(row)
    if not measure:
        return
    from bench.bundle import random_bundle
    from bench.run import write_results
    from bench.state import list_bytes, session_bytes

    tops = [int(x) for x in _numbers(top_n, "--top-n", int)]
    lengths = [int(x) for x in _numbers(events, "--events", int)]
    logs = BENCH_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stored = session_bytes(lengths, sessions, s.session_max_len, s.dedup_window)
    for point in stored:
        typer.echo(point.row())
    lists = list_bytes(s, bundle or random_bundle(BENCH_DIR), top_ns=tops, users=users, log_dir=logs)
    for measured in lists:
        typer.echo(measured.row())
    from dataclasses import asdict

    write_results(out, {"session_max_len": s.session_max_len, "dedup_window": s.dedup_window,
                        "sessions": [asdict(r) for r in stored], "lists": [asdict(r) for r in lists]})
    typer.echo(f"wrote {out}")


@app.command("bench-funnel", rich_help_panel=BENCHMARKS)
def bench_funnel(
    bundle: Annotated[Path | None, typer.Option(help="Bundle to time (default: random Beauty-sized; a bundle with a ranker adds the ranker rows).")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Users per micro-batch, comma-separated.")] = "64,256",
    batches: Annotated[int, typer.Option(min=2, help="Timed batches per configuration and size.")] = 30,
    candidates: Annotated[int, typer.Option(min=1, help="Retrieved candidates per user with a rule on (STREAMREC_CANDIDATES).")] = 200,
    session_lengths: Annotated[str | None, typer.Option(
        help="Instead: the plain funnel on sessions of exactly these lengths, comma-separated "
             "(e.g. 5,50,200), at the first batch size; the default bundle is then random "
             "with max_len the longest.")] = None,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-funnel.json"),
) -> None:
    """The funnel's compute per micro-batch, in process: retrieval, the ranker, the rules."""
    sizes = [int(x) for x in _numbers(batch_sizes, "--batch-sizes", int)]
    lengths = [int(x) for x in _numbers(session_lengths, "--session-lengths", int)] \
        if session_lengths is not None else None
    from bench.bundle import random_bundle
    from bench.funnel import as_dict, run, run_lengths
    from bench.run import write_results

    path = bundle or random_bundle(BENCH_DIR, max_len=max(lengths) if lengths else 50)
    if not (path / "manifest.json").is_file():
        fail(f"{path} is not a bundle (no manifest.json)", 2)
    if lengths:
        results = run_lengths(path, lengths, sizes[0], batches=batches,
                              on_result=lambda r: typer.echo(r.row()))
        spreads = {}
        for mode in dict.fromkeys(r.config.split(",")[0] for r in results):
            per_user = [r.us_per_user for r in results if r.config.startswith(mode + ",")]
            spreads[mode] = round(max(per_user) / min(per_user), 3)
            typer.echo(f"{mode}: per-user cost, dearest over cheapest session length: "
                       f"{spreads[mode]:.2f}x")
        write_results(out, {"bundle": str(path), "session_lengths": lengths,
                            "spread": spreads, "results": as_dict(results)})
    else:
        results = run(path, sizes, batches=batches, candidates=candidates,
                      on_result=lambda r: typer.echo(r.row()))
        write_results(out, {"bundle": str(path), "candidates": candidates,
                            "results": as_dict(results)})
    typer.echo(f"wrote {out}")


def _each(rows: Iterable[Any], out: Path, report: dict[str, object]) -> None:
    """Print each result's row as it comes, then write them all (``as_dict``) to ``out``."""
    from bench.run import write_results

    results = []
    for r in rows:
        typer.echo(r.row())
        results.append(asdict(r))
    write_results(out, {**report, "results": results})
    typer.echo(f"wrote {out}")


@app.command("bench-reopen", rich_help_panel=BENCHMARKS)
def bench_reopen(
    users: Annotated[str, typer.Option(help="Users' sessions to write, comma-separated.")] = "100000,1000000",
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-reopen.json"),
) -> None:
    """The disk store's databases opened again: flushed (a worker's stop closes them), or
    with their write-ahead logs (after a kill -9)."""
    counts = [int(x) for x in _numbers(users, "--users", int)]
    from bench.reopen import PARTITIONS, measure

    _each((measure(n, flush) for n in counts for flush in (False, True)), out,
          {"partitions": PARTITIONS})


@app.command("bench-broker", rich_help_panel=BENCHMARKS)
def bench_broker(
    records: Annotated[str, typer.Option(help="Log lengths to probe, comma-separated.")] = "10000,100000,1000000",
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-broker.json"),
) -> None:
    """The broker's offset lookups and fetches against a partition's log length (a
    restart's broker round trips): N one-record batches, then ListOffsets and a fetch."""
    sizes = [int(x) for x in _numbers(records, "--records", int)]
    from bench.broker import measure
    from bench.services import find
    from streamrec.errors import ConfigError

    s = settings()
    broker = find(s)[0]
    typer.echo(f"broker: {broker.where}")
    try:
        _each((measure(s, n) for n in sizes), out, {"broker": broker.where})
    except ConfigError as e:
        fail(str(e), 2)


@app.command("bench-store", rich_help_panel=BENCHMARKS)
def bench_store(
    batch_sizes: Annotated[str, typer.Option(help="Lists per batch, comma-separated.")] = "64,256",
    batches: Annotated[int, typer.Option(min=2, help="Timed batches per size.")] = 50,
    top_n: Annotated[int, typer.Option(min=1, help="Items per list.")] = 10,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-store.json"),
) -> None:
    """The Redis write of one batch of lists, in process: the client's CPU and the round trip
    (against a Redis Cluster with STREAMREC_REDIS_CLUSTER=true)."""
    sizes = [int(x) for x in _numbers(batch_sizes, "--batch-sizes", int)]
    from bench.store import as_dict, run

    s = settings()
    results = run(s.redis_url.get_secret_value(), sizes, batches=batches, top_n=top_n,
                  cluster=s.redis_cluster)
    _report(results, out, {"top_n": top_n, "cluster": s.redis_cluster, "results": as_dict(results)})


@app.command("bench-online", rich_help_panel=BENCHMARKS)
def bench_online(
    batch_sizes: Annotated[str, typer.Option(help="Clicks per batch, comma-separated.")] = "64,256",
    batches: Annotated[int, typer.Option(min=2, help="Timed batches per size.")] = 400,
    users: Annotated[int, typer.Option(min=1, help="Users whose lists are held.")] = 10_000,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/bench-online.json"),
) -> None:
    """The online metrics' own work per event, in process (observe and remember)."""
    sizes = [int(x) for x in _numbers(batch_sizes, "--batch-sizes", int)]
    from bench.online import as_dict, run

    results = run(sizes, batches=batches, users=users)
    _report(results, out, {"results": as_dict(results)})


def _report(results: Sequence[Any], out: Path, report: dict[str, object]) -> None:
    """Each result's row on stdout, then the results file."""
    from bench.run import write_results

    for r in results:
        typer.echo(r.row())
    write_results(out, report)
    typer.echo(f"wrote {out}")
