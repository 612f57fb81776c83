"""The retrain job: ``retrain`` (:mod:`training.retrain`), and the impression-negatives
benchmark ``bench-impression-negatives`` (:mod:`bench.impression_negatives`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.base import BENCHMARKS, MODELS, app, fail, print_json, settings
from cli.data import Loss
from streamrec.settings import Settings

if TYPE_CHECKING:  # the command imports torch (via training) only when it runs
    from training.retrain import Publisher


@app.command(rich_help_panel=MODELS)
def retrain(
    out: Annotated[Path, typer.Option(help="Bundle directory to write (replaced atomically).")] = Path("var/bundles/retrain"),
    config: Annotated[Path | None, typer.Option(help="TOML config (training/configs/*.toml).")] = None,
    since: Annotated[int | None, typer.Option(help="First event time, epoch ms (default: when the current bundle was made).")] = None,
    full_history: Annotated[bool, typer.Option("--full-history", help="Read the topics from the beginning, not since the last bundle.")] = False,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[float | None, typer.Option(min=0.1, help="Wall-clock budget.")] = None,
    loss: Annotated[Loss | None, typer.Option()] = None,
    negatives: Annotated[int | None, typer.Option(min=1)] = None,
    impression_negatives: Annotated[int | None, typer.Option(min=0, help="With --loss sampled: per position, items shown and not clicked (mixed 1:1 with uniform ones).")] = None,
    impression_top_k: Annotated[int, typer.Option(min=1, help="How many of a written list the user sees.")] = 10,
    impression_window: Annotated[float | None, typer.Option(min=0.0, help="Seconds after a click in which a later click of a shown item removes it from the negatives.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the bundle and announce it to workers.")] = True,
    canary: Annotated[int | None, typer.Option(min=1, max=99, help="Publish as a canary on this % of users instead (`streamrec canary watch` decides).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """One-shot retrain (for a CronJob): read the topics since the last bundle, train, evaluate, publish."""
    from streamrec.errors import ConfigError, DataError
    from training.retrain import retrain as run_retrain

    if since is not None and full_history:
        fail("give --since or --full-history, not both", 2)
    if canary is not None and not publish:
        fail("--canary publishes: drop --no-publish", 2)
    flags = {"epochs": epochs, "max_minutes": max_minutes, "loss": loss.value if loss else None,
             "negatives": negatives, "impression_negatives": impression_negatives, "seed": seed}
    publisher: Publisher | None = None  # the seam: any (settings, bundle_dir) -> str coroutine
    if canary is not None:
        publisher = _canary(canary)
    elif publish:
        publisher = _announce
    try:
        report = run_retrain(settings(), out, config=config, flags=flags, since_ms=since,
                             from_last_bundle=not full_history, top_k=impression_top_k,
                             window_ms=None if impression_window is None else int(impression_window * 1000),
                             publish=publisher, on_read=lambda msg: typer.echo(msg, err=True),
                             progress=not json_out)
    except (ConfigError, DataError) as e:
        fail(str(e), 2)
    if json_out:
        print_json(report)
        return
    full = report["test"]["full"]
    typer.echo(f"trained {report['version']} on events since {report['since_ms']}: test HR@10 "
               f"{full['hr@10']:.4f} NDCG@10 {full['ndcg@10']:.4f}; "
               f"{report['impression_positions']} clicks with impression negatives")
    typer.echo(f"published: {report['published']}" if report["published"] else "not published")


async def _announce(s: Settings, bundle_dir: Path) -> str:
    from serving.registry import publish_bundle

    return (await publish_bundle(s, bundle_dir)).uri


def _canary(percent: int) -> Publisher:
    async def publish(s: Settings, bundle_dir: Path) -> str:
        from serving import experiments
        from serving.rollout import policy_from, publish_canary

        policy = experiments.check_policy(policy_from(s))
        return (await publish_canary(s, bundle_dir, percent, policy)).name
    return publish


@app.command("bench-impression-negatives", rich_help_panel=BENCHMARKS)
def bench_impression_negatives(
    users: Annotated[int, typer.Option(min=10)] = 2000,
    items: Annotated[int, typer.Option(min=20)] = 1000,
    seeds: Annotated[str, typer.Option(help="Comma-separated training seeds.")] = "1,2,3",
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    impression_negatives: Annotated[int, typer.Option(min=1)] = 9,
    negatives: Annotated[int, typer.Option(min=1)] = 128,
    top_k: Annotated[int, typer.Option(min=1)] = 10,
    data_seed: Annotated[int, typer.Option()] = 7,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("var/bench/impression-negatives.json"),
) -> None:
    """Sampled loss with and without impression negatives on a simulated log (test NDCG@10 / HR@10)."""
    import tempfile

    import orjson

    from bench.impression_negatives import run
    from training.data.synthetic import SyntheticSpec

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        fail(f"--seeds takes comma-separated integers, not {seeds!r}", 2)
    if not seed_list:
        fail("--seeds needs at least one seed", 2)
    spec = SyntheticSpec(users=users, items=items, clusters=max(items // 20, 2), seed=data_seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(spec, seed_list, epochs, impression_negatives, negatives, Path(tmp), top_k)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for arm, s in result["summary"].items():
        typer.echo(f"{arm:12s} NDCG@10 {s['ndcg@10']['mean']:.4f} ± {s['ndcg@10']['stdev']:.4f}  "
                   f"HR@10 {s['hr@10']['mean']:.4f} ± {s['hr@10']['stdev']:.4f}")
    typer.echo(f"wrote {out}")


@app.command("bench-retrain-loop", rich_help_panel=BENCHMARKS)
def bench_retrain_loop(
    serving: Annotated[Path, typer.Option(help="The bundle the worker serves while the log is made (a bundle of the synthetic world).")],
    users: Annotated[int, typer.Option(min=10, help="Simulated users in the log.")] = 2000,
    steps: Annotated[int, typer.Option(min=1, help="Clicks per user on served lists.")] = 15,
    warmup: Annotated[int, typer.Option(min=1)] = 5,
    seeds: Annotated[str, typer.Option(help="Comma-separated training (and online) seeds.")] = "1,2,3",
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    impression_negatives: Annotated[int, typer.Option(min=1)] = 9,
    online_users: Annotated[int, typer.Option(min=10)] = 1000,
    online_steps: Annotated[int, typer.Option(min=1)] = 10,
    world_users: Annotated[int, typer.Option(min=1)] = 2000,
    world_items: Annotated[int, typer.Option(min=10)] = 1000,
    world_seed: int = 7,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("var/bench/retrain-loop.json"),
) -> None:
    """Simulated users make a log on a live worker; retrain from it with and without impression negatives; compare offline and online in the simulator."""
    import tempfile

    import orjson

    from bench.retrain_loop import run
    from bench.simulate import SimSpec
    from training.data.synthetic import SyntheticSpec

    if not (serving / "manifest.json").is_file():
        fail(f"--serving {serving}: not a bundle directory (no manifest.json)", 2)
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        fail(f"--seeds takes comma-separated integers, not {seeds!r}", 2)
    if not seed_list:
        fail("--seeds needs at least one seed", 2)
    world = SyntheticSpec(users=world_users, items=world_items, seed=world_seed)
    log_spec = SimSpec(users, steps, warmup=warmup, seed=1000)
    online_spec = SimSpec(online_users, online_steps)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(settings(), serving, world, log_spec, online_spec, seed_list, epochs,
                     impression_negatives, Path(tmp), out.with_suffix(".worker.log"),
                     on_progress=lambda m: typer.echo(m, err=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    s = result["summary"]
    for arm in ("uniform", "impressions"):
        off, on = s["offline"][arm], s["online_hr@10"][arm]
        typer.echo(f"{arm:12s} offline NDCG@10 {off['mean']:.4f} ± {off['stdev']:.4f}  "
                   f"online HR@10 {on['mean']:.4f} ± {on['stdev']:.4f}")
    typer.echo(f"impressions ahead online on {s['online_wins']} of {len(seed_list)} seeds; wrote {out}")
