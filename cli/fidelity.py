"""``streamrec fidelity``: the live worker's lists against the same bundle offline (:mod:`bench.fidelity`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.base import BENCHMARKS, app, fail, settings


@app.command(rich_help_panel=BENCHMARKS)
def fidelity(
    bundle: Annotated[Path, typer.Option(help="The bundle the running worker serves.")],
    data: Annotated[Path, typer.Option(help="Sequence file (the training data format).")],
    users: Annotated[int, typer.Option(min=1, help="Users to replay, drawn with --seed.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the user draw.")] = 0,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the lists.")] = 300.0,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/fidelity.json"),
) -> None:
    """Replay users' histories through the live worker; compare its lists and HR@10 offline."""
    if not (bundle / "manifest.json").is_file():
        fail(f"--bundle {bundle} is not a bundle (no manifest.json)", 2)
    if not data.is_file():
        fail(f"--data {data}: no such file", 2)
    from bench.fidelity import run
    from bench.run import write_results
    from serving.bundle import load_bundle
    from serving.reader import RecsReader

    s = settings()
    version = load_bundle(bundle).version
    statuses = RecsReader.from_url(s.redis_url.get_secret_value(), s.key_prefix,
                                  s.redis_cluster).worker_statuses()
    serving = sorted({st.get("model_version", "?") for st in statuses.values()})
    if version not in serving:
        fail(f"no worker under key prefix {s.key_prefix!r} serves bundle {version} "
             f"(serving: {', '.join(serving) or 'no worker'}); start one with "
             f"STREAMREC_BUNDLE_PATH={bundle}", 2)
    try:
        report = run(s, bundle, data, users, seed, timeout_s=timeout, on_progress=typer.echo)
    except ValueError as e:
        fail(str(e), 2)
    for row in report.rows():
        typer.echo(row)
    write_results(out, report.as_dict())
    typer.echo(f"wrote {out}")
