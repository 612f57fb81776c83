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
