"""The user simulator: ``streamrec simulate`` (:mod:`bench.simulate`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli.base import BENCHMARKS, app, fail


class SimMode(str, Enum):
    ab = "ab"
    interleave = "interleave"
    both = "both"


@app.command(rich_help_panel=BENCHMARKS)
def simulate(
    a: Annotated[str, typer.Option(help="Arm A (control): a bundle directory, or 'popular'.")],
    b: Annotated[str, typer.Option(help="Arm B: a bundle directory, or 'popular' (the bundle's popularity ranking).")],
    mode: Annotated[SimMode, typer.Option(help="A/B, team-draft interleaving, or both on the same seeds.")] = SimMode.both,
    seeds: Annotated[int, typer.Option(min=1, max=1000)] = 5,
    users: Annotated[int, typer.Option(min=10)] = 2000,
    steps: Annotated[int, typer.Option(min=1)] = 20,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="What a user sees of its list.")] = 10,
    exposure: Annotated[float, typer.Option(min=0.0, help="How much a shown item's chance rises at rank 1.")] = 3.0,
    world_users: Annotated[int, typer.Option(min=1, help="The synthetic world the bundles were trained on (streamrec generate / train --synthetic defaults).")] = 2000,
    world_items: Annotated[int, typer.Option(min=10)] = 1000,
    world_seed: int = 7,
    curve_every: Annotated[int, typer.Option(min=1, help="Clicks between the points of the p-value curve.")] = 10,
    alpha: Annotated[float, typer.Option(min=1e-6, max=0.5, help="Significance level of the detection count.")] = 0.01,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("var/bench/simulate.json"),
) -> None:
    """Simulated users with hidden sequential preferences click on two arms' lists; reports online HR@10, the tests, and the clicks each mode needs."""
    import orjson

    from bench.simulate import POPULAR, SimSpec, as_dict, clicks_needed, run
    from training.data.synthetic import SyntheticSpec

    for name, src in (("--a", a), ("--b", b)):
        if src != POPULAR and not (Path(src) / "manifest.json").is_file():
            fail(f"{name} {src}: not a bundle directory (no manifest.json) and not 'popular'", 2)
    if POPULAR == a == b:
        fail("at least one arm needs a bundle", 2)
    world = SyntheticSpec(users=world_users, items=world_items, seed=world_seed)
    modes = ["ab", "interleave"] if mode == SimMode.both else [mode.value]
    report: dict[str, object] = {"arms": {"a": a, "b": b}, "users": users, "steps": steps,
                                 "curve_every": curve_every,
                                 "top_k": top_k, "exposure": exposure, "alpha": alpha}
    for m in modes:
        results = [run(world, {"a": a, "b": b}, m, SimSpec(users, steps, top_k=top_k,
                                                           exposure=exposure, seed=s,
                                                           curve_every=curve_every))
                   for s in range(seeds)]
        for r in results:
            detail = (f"HR@10 a {r.hr10.get('a', 0):.4f} b {r.hr10.get('b', 0):.4f}" if m == "ab"
                      else f"wins a {r.wins['a']} b {r.wins['b']}")
            typer.echo(f"{m:<10} seed {r.seed:3d}  {sum(r.clicks.values())} clicks  {detail}  "
                       f"p {r.p_value:.3g}  ({r.seconds:.1f} s)")
        significant = sum(r.p_value < 0.05 for r in results)
        detected = sum(r.p_value < alpha for r in results)
        need = clicks_needed(results, alpha)
        typer.echo(f"{m:<10} {significant}/{seeds} seeds p < 0.05, {detected}/{seeds} p < {alpha:g}; "
                   f"median clicks until p < {alpha:g} for good (A/B: both arms together): "
                   f"{'not reached' if need is None else int(need)}")
        report[m] = {"results": as_dict(results), "significant_at_0.05": significant,
                     "detected": detected, "clicks_needed": need}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    typer.echo(f"wrote {out}")


class ReadVia(str, Enum):
    redis = "redis"
    http = "http"


@app.command("simulate-live", rich_help_panel=BENCHMARKS)
def simulate_live(
    users: Annotated[int, typer.Option(min=1)] = 500,
    steps: Annotated[int, typer.Option(min=1)] = 10,
    warmup: Annotated[int, typer.Option(min=1, help="Clicks per user drawn from the world before its first list.")] = 5,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="What a user sees of its list.")] = 10,
    exposure: Annotated[float, typer.Option(min=0.0, help="How much a shown item's chance rises at rank 1.")] = 3.0,
    seed: int = 0,
    world_users: Annotated[int, typer.Option(min=1, help="The synthetic world the bundles were trained on (streamrec generate / train --synthetic defaults).")] = 2000,
    world_items: Annotated[int, typer.Option(min=10)] = 1000,
    world_seed: int = 7,
    read: Annotated[ReadVia, typer.Option(help="Where users read their lists: Redis (as serving.reader does) or a worker's GET /recs.")] = ReadVia.redis,
    url: Annotated[str, typer.Option(help="A worker's base URL, for --read http (e.g. http://127.0.0.1:6066).")] = "",
    token: Annotated[str, typer.Option(envvar="STREAMREC_SIM_TOKEN", help="Bearer token for --read http, where the API asks for one.")] = "",
    shown: Annotated[bool, typer.Option(help="Report what each user saw (its first top-k) on the impressions topic.")] = True,
    watch_canary: Annotated[bool, typer.Option(help="After each step, one look by the canary controller; stop once it decides.")] = False,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for the workers' lists after each step.")] = 120.0,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("var/bench/simulate-live.json"),
) -> None:
    """Simulated users against the running system: clicks through the broker, lists from Redis or HTTP, shown reports on the impressions topic; reports what the workers counted."""
    import asyncio

    from bench import simulate_live as live
    from bench.simulate import SimSpec
    from cli.base import settings
    from serving import rollout
    from streamrec.errors import ConfigError, WaitTimedOut
    from training.data.synthetic import SyntheticSpec

    if read == ReadVia.http and not url:
        fail("--read http needs --url, a worker's base URL (for example http://127.0.0.1:6066)", 2)
    s = settings()
    spec = SimSpec(users, steps, warmup=warmup, top_k=top_k, exposure=exposure, seed=seed)
    world = SyntheticSpec(users=world_users, items=world_items, seed=world_seed)
    lists = live.Lists(s, read.value, url, token)
    hook = live.canary_hook(s) if watch_canary else None
    try:
        res = asyncio.run(live.run(s, world, spec, lists=lists, report_shown=shown,
                                   timeout_s=timeout, hook=hook, on_progress=typer.echo))
    except (WaitTimedOut, ConfigError) as e:
        fail(str(e))
    for row in live.summary(res):
        typer.echo(row)
    extra: dict[str, object] = {"read": read.value, "top_k": top_k, "exposure": exposure,
                                "seed": seed, "shown": shown}
    _, known = asyncio.run(rollout.experiment_records(s))
    running = [e for e in known.values() if e.running]
    if running:  # what the workers counted for it
        counts, wins = rollout.read_counts(s, running[0].name)
        r = rollout.report(running[0], counts, wins)
        typer.echo(rollout.format_report(r))
        extra["experiment"] = r
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(live.dumps(res, extra))
    typer.echo(f"wrote {out}")
