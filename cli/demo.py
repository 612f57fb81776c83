"""The main job on local defaults, end to end (``make demo`` / ``streamrec demo``).

generate data -> train SASRec -> export bundle -> start a worker -> replay clicks
(plus a few malformed records) -> wait until the worker caught up -> summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import typer

from cli.harness import Status, WorkerProcess
from cli.waiting import ProcessExited, WaitTimedOut
from serving.keys import recs_key
from serving.latency import percentiles
from serving.reader import RecsReader
from serving.redis_client import SyncClient, sync_client
from streamrec.settings import Settings

VAR = Path("var")
BAD_RECORDS: list[tuple[bytes | None, bytes | None]] = [
    (b"bad-json", b"{not json"),
    (b"missing-field", b'{"event_id": "x", "user_id": "missing-field", "ts": 1}'),
    (b"wrong-type", b'{"event_id": "y", "user_id": "wrong-type", "item_id": "1", "ts": "soon"}'),
]


def say(msg: str) -> None:
    typer.secho(msg, fg=typer.colors.CYAN)


def run_demo(settings: Settings, *, users: int, items: int, train_minutes: float,
             rate: float | None) -> None:
    from serving.registry import publish_bundle
    from streamrec.kafka import ensure_topics
    from streams.replay import replay, send_raw
    from training.data.sequences import write_sequences
    from training.data.synthetic import SyntheticSpec, generate
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    r = sync_client(settings.redis_url.get_secret_value(), settings.redis_cluster,
                    decode_responses=True)
    r.ping()
    run_id = time.strftime("%Y%m%d%H%M%S")

    say(f"[1/5] generating synthetic clicks ({users} users, {items} items)")
    data = generate(SyntheticSpec(users=users, items=items))
    seqs = [data.vocab.decode(s) for s in data.seqs]
    write_sequences(VAR / "demo" / "clicks.txt", data.users, seqs)

    say(f"[2/5] training SASRec (budget {train_minutes} min)")
    report = train_and_export(data, settings.bundle_path, {"max_len": 50, "dim": 64},
                              TrainConfig(epochs=60, patience=5, max_minutes=train_minutes))
    test, pop = report.test["full"], report.popularity_test["full"]
    typer.echo(f"  bundle {report.manifest.version}: {report.epochs} epochs in {report.seconds:.0f}s; "
               f"test (full ranking) HR@10 {test['hr@10']:.4f} NDCG@10 {test['ndcg@10']:.4f} | "
               f"popularity HR@10 {pop['hr@10']:.4f} NDCG@10 {pop['ndcg@10']:.4f}")

    say("[3/5] publishing the bundle and starting a worker")
    asyncio.run(ensure_topics(settings))
    announced = asyncio.run(publish_bundle(settings, settings.bundle_path))
    typer.echo(f"  announced {announced.version} on {settings.model_updates_topic} ({announced.uri})")
    worker_id = f"demo-{run_id}"
    log_path = VAR / "log" / f"worker-{worker_id}.log"
    # A short rebalance timeout: a fresh group's first join waits this long on some brokers.
    # Tansu needs one record per producer batch for complete changelog recovery.
    local = {k: v for k, v in {"rebalance_timeout_s": 5.0, "producer_max_batch_bytes": 1}.items()
             if k not in settings.model_fields_set}
    worker = WorkerProcess.start(settings.model_copy(update={**local, "worker_id": worker_id}),
                                 log_path, bundle=settings.bundle_path)
    try:
        ready = _wait(worker.wait_ready, log_path)
        typer.echo(f"  worker {worker_id} (pid {worker.proc.pid}) serving {ready['model_version']}")

        say(f"[4/5] replaying clicks into Kafka at {f'{rate:.0f}/s' if rate else 'full speed'}")
        t0 = time.monotonic()
        stats = asyncio.run(replay(settings, settings.clicks_topic, data.users, seqs,
                                   id_prefix=f"{run_id}:", rate=rate))
        asyncio.run(send_raw(settings, settings.clicks_topic, BAD_RECORDS))
        expected = stats.sent + len(BAD_RECORDS)
        typer.echo(f"  sent {stats.sent} clicks + {len(BAD_RECORDS)} malformed records "
                   f"in {stats.seconds:.1f}s")
        _wait(lambda: worker.wait_events(expected, timeout=300), log_path)
        elapsed = time.monotonic() - t0

        say("[5/5] summary")
        w = worker.status()
        lags = _lags(r, settings, data.users)
        rows = [
            ("events sent", f"{expected} ({stats.sent} clicks, {len(BAD_RECORDS)} malformed)"),
            ("events processed", w.get("events")),
            ("dead-lettered", f"{w.get('dead_lettered', 0)} (topic {settings.dlq_topic})"),
            ("duplicates ignored", w.get("duplicates", 0)),
            ("users with recs in Redis",
             f"{sum(r.exists(recs_key(settings.key_prefix, u)) for u in data.users)} of {len(data.users)}"),
            ("model version", w.get("model_version")),
            ("throughput", (f"{int(w['events']) / elapsed:.0f} events/s (replay start to caught up, "
                            f"{elapsed:.1f}s)")),
            ("batches", f"{w.get('batches')} (mean {int(w['events']) / int(w['batches']):.0f} events)"),
            ("lag, all events", _all_events_lag(worker)),
            ("lag, users' last event", (f"p50 {np.percentile(lags, 50):.0f} ms, "
                                        f"p99 {np.percentile(lags, 99):.0f} ms, max {max(lags):.0f} ms")),
        ]
        for k, v in rows:
            typer.echo(f"  {k:26s} {v}")
        reader = RecsReader.from_url(settings.redis_url.get_secret_value(), settings.key_prefix,
                                     settings.redis_cluster)
        for u in data.users[:3]:
            rec = reader.get_recommendations(u)
            if rec:
                typer.echo(f"  user {u}: last clicks {seqs[data.users.index(u)][-3:]} -> "
                           f"{rec.items[:10]} ({rec.source}, {rec.model_version})")
        typer.echo(f"  read any user's list: .venv/bin/streamrec recs {data.users[0]}")
        _show_http(worker, data.users[0])
    finally:
        worker.stop()


def _wait(wait: Callable[[], Status], log: Path) -> Status:
    try:
        return wait()
    except (ProcessExited, WaitTimedOut) as e:
        raise SystemExit(f"{e}; see {log}") from None


def _show_http(worker: WorkerProcess, user: str) -> None:
    """What the worker's HTTP port answers (it stops with the demo; see docs/operations.md,
    "The worker's HTTP port")."""
    port = worker.settings.web_port
    for path in ("/health", "/ready", f"/recs/{user}?n=3", "/recs/no-such-user?n=3"):
        status, body = worker.get(path)
        typer.echo(f"  GET :{port}{path} -> {status} {body.decode()[:150]}")
    _, text = worker.get("/metrics")
    names = sorted({line.split("{")[0].split(" ")[0] for line in text.decode().splitlines()
                    if line.startswith("streamrec_")})
    typer.echo(f"  GET :{port}/metrics -> {len(names)} streamrec_* series, e.g. "
               + ", ".join(n for n in names if n.endswith("_total"))[:200])


def _all_events_lag(worker: WorkerProcess) -> str:
    """Percentiles of the worker's event -> Redis histogram (its /metrics)."""
    p = percentiles(worker.latency_fields())
    if not p:
        return "no events measured"
    return (f"p50 <= {p['p50']:.0f} ms, p99 <= {p['p99']:.0f} ms over {p['count']:.0f} events "
            "(event time -> list in Redis, queueing included; worker /metrics)")


def _lags(r: SyncClient, settings: Settings, users: list[str]) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.hmget(recs_key(settings.key_prefix, u), "generated_at", "last_event_ts")
    return [int(g) - int(t) for g, t in pipe.execute() if g and t]
