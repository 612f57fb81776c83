"""Data and evaluation: synthetic data, training (with export and publishing), evaluation."""

from __future__ import annotations

import asyncio
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.base import DATA, app, fail, print_json, settings


class Loss(str, Enum):
    ce = "ce"
    sampled = "sampled"
    bce = "bce"


class Positions(str, Enum):
    start = "start"
    end = "end"


class Norm(str, Enum):
    pre = "pre"
    post = "post"


class Samples(str, Enum):
    positions = "positions"
    windows = "windows"
    prefixes = "prefixes"


class ModelName(str, Enum):
    sasrec = "sasrec"
    twotower = "twotower"
    bpr = "bpr"
    pop = "pop"


class IndexType(str, Enum):
    auto = "auto"
    flat_ip = "flat_ip"
    ivf_ip = "ivf_ip"
    hnsw_ip = "hnsw_ip"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class SplitName(str, Enum):
    test = "test"
    valid = "valid"


@app.command(rich_help_panel=DATA)
def generate(
    out: Annotated[Path, typer.Option(help="Output sequence file.")],
    users: Annotated[int, typer.Option(min=1)] = 2000,
    items: Annotated[int, typer.Option(min=10)] = 1000,
    seed: int = 7,
    attributes_out: Annotated[Path | None, typer.Option(help="Also write item attributes (item2attributes JSON).")] = None,
) -> None:
    """Write a synthetic click log with sequential structure (``user item item …`` per line)."""
    import orjson

    from training.data.sequences import write_sequences
    from training.data.synthetic import SyntheticSpec, item_attributes
    from training.data.synthetic import generate as gen

    spec = SyntheticSpec(users=users, items=items, seed=seed)
    data = gen(spec)
    write_sequences(out, data.users, [data.vocab.decode(s) for s in data.seqs])
    typer.echo(f"wrote {len(data.users)} users, {data.num_interactions} clicks to {out}")
    if attributes_out is not None:
        attributes_out.write_bytes(orjson.dumps(item_attributes(spec)))
        typer.echo(f"wrote the attributes of {items} items to {attributes_out}")


@app.command(rich_help_panel=DATA)
def train(
    data: Annotated[Path | None, typer.Option(help="Sequence file or MovieLens ratings.dat.")] = None,
    synthetic: Annotated[bool, typer.Option(help="Train on generated data.")] = False,
    from_topic: Annotated[bool, typer.Option(help="Read sequences from the clicks topic.")] = False,
    since: Annotated[int | None, typer.Option(help="With --from-topic: first event time, epoch ms.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config (training/configs/*.toml).")] = None,
    model: Annotated[ModelName | None, typer.Option(help="Overrides the config's model.")] = None,
    out: Annotated[Path, typer.Option(help="Bundle directory to write (replaced atomically).")] = Path("var/bundles/current"),
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[float | None, typer.Option(min=0.1, help="Wall-clock budget.")] = None,
    patience: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(min=1e-6, max=1.0)] = None,
    weight_decay: Annotated[float | None, typer.Option(min=0.0)] = None,
    loss: Annotated[Loss | None, typer.Option()] = None,
    negatives: Annotated[int | None, typer.Option(min=1)] = None,
    hard_negatives: Annotated[int | None, typer.Option(min=0, help="With --loss sampled.")] = None,
    impression_negatives: Annotated[int | None, typer.Option(min=0, help="With --loss sampled and --from-topic: per position, items shown and not clicked (mixed 1:1 with uniform ones).")] = None,
    impression_top_k: Annotated[int, typer.Option(min=1, help="With --from-topic: how many of a written list the user sees.")] = 10,
    impression_window: Annotated[float | None, typer.Option(min=0.0, help="With --from-topic: seconds after a click in which a later click of a shown item removes it from the negatives.")] = None,
    refit: Annotated[bool | None, typer.Option("--refit/--no-refit", help="Retrain on train+valid for the selected epochs.")] = None,
    mask_seen: Annotated[bool | None, typer.Option("--mask-seen/--no-mask-seen", help="With --loss ce: leave each position's history out of its softmax.")] = None,
    samples: Annotated[Samples | None, typer.Option(help="Training samples: each sequence once with a loss at every position, in windows of max-len, or every prefix with a loss at its last.")] = None,
    max_len: Annotated[int | None, typer.Option(min=2)] = None,
    dim: Annotated[int | None, typer.Option(min=4)] = None,
    layers: Annotated[int | None, typer.Option(min=1)] = None,
    heads: Annotated[int | None, typer.Option(min=1)] = None,
    dropout: Annotated[float | None, typer.Option(min=0.0, max=0.9)] = None,
    lowpass: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Share of the causal low-pass branch per block (0 = plain SASRec).")] = None,
    positions: Annotated[Positions | None, typer.Option(help="SASRec's positions: from the window's first item (start: the bundle gets a step model) or back from the newest (end).")] = None,
    causal: Annotated[bool | None, typer.Option("--causal/--bidirectional", help="SASRec's attention: each position reads the items before it (the bundle gets a step model), or every item of the window (needs --samples prefixes).")] = None,
    lowpass_freqs: Annotated[int | None, typer.Option(min=0, help="The low-pass part: 0, the running mean; C, the window's lowest C frequencies (BSARec's filter; needs --bidirectional).")] = None,
    norm: Annotated[Norm | None, typer.Option(help="SASRec's layer norms: before attention and the feed-forward part (pre) or after each residual sum and over the embedding (post).")] = None,
    ffn_mult: Annotated[int | None, typer.Option(min=1, help="SASRec's feed-forward width, in multiples of dim.")] = None,
    ema: Annotated[float | None, typer.Option(min=0.0, max=0.9999, help="Decay of a moving average of the weights, updated every step; validation and the bundle read the average (0 = off).")] = None,
    lr_plateau: Annotated[int | None, typer.Option(min=0, help="Cut the learning rate after this many epochs without a better validation score, and again after as many more (0 = off); a refit replays the cuts.")] = None,
    lr_factor: Annotated[float | None, typer.Option(min=0.01, max=0.99, help="With --lr-plateau: what each cut multiplies the learning rate by.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads of the training process (default: torch's own choice; with --distributed, the cores over the processes).")] = None,
    attributes: Annotated[Path | None, typer.Option(help="Item attributes (item2attributes JSON, or 'item<TAB>attrs' lines): train an item tower.")] = None,
    id_dropout: Annotated[float | None, typer.Option(min=0.0, max=0.9, help="With --attributes: share of items whose ID part each step drops.")] = None,
    index_type: Annotated[IndexType, typer.Option(help="Item index: exact (flat_ip), IVF or HNSW; auto = exact below 100,000 items, IVF from there.")] = IndexType.auto,
    tower: Annotated[bool, typer.Option("--tower/--no-tower", help="With --attributes: train the item tower (off: the attributes feed only the ranker).")] = True,
    ranker: Annotated[bool, typer.Option("--ranker/--no-ranker", help="Also train the ranking stage (needs --no-refit; docs/models.md, \"Ranking\").")] = False,
    ranker_candidates: Annotated[int, typer.Option(min=10, max=2000, help="With --ranker: candidates per user it learns to order (the worker ranks as many).")] = 100,
    blend: Annotated[bool, typer.Option("--blend/--no-blend", help="With --attributes and --no-refit: choose the content blend's weight on validation (docs/models.md, \"The content blend\").")] = True,
    publish: Annotated[bool, typer.Option(help="Publish the bundle and announce it to workers.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    distributed: Annotated[bool, typer.Option(help="Data-parallel over the processes torchrun starts (torchrun --nproc-per-node N -m cli train ... --distributed); rank 0 writes the bundle.")] = False,
    device: Annotated[Device, typer.Option(help="Where the sequence model trains: auto = cuda when a GPU is visible.")] = Device.cpu,
) -> None:
    """Train a model (SASRec by default, the two-tower model, or the pop/BPR baselines), evaluate, export a bundle."""
    # Every model and training flag is named like its config key (training/config.py).
    flags = {"epochs": epochs, "max_minutes": max_minutes, "patience": patience,
             "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
             "loss": loss.value if loss else None, "negatives": negatives,
             "hard_negatives": hard_negatives, "impression_negatives": impression_negatives, "refit": refit, "mask_seen": mask_seen,
             "samples": samples.value if samples else None, "max_len": max_len, "dim": dim, "layers": layers, "heads": heads, "dropout": dropout,
             "lowpass": lowpass, "positions": positions.value if positions else None, "causal": causal, "lowpass_freqs": lowpass_freqs,
             "norm": norm.value if norm else None, "ffn_mult": ffn_mult, "ema": ema,
             "lr_plateau": lr_plateau, "lr_factor": lr_factor, "seed": seed, "threads": threads,
             "id_dropout": id_dropout}
    from streamrec.errors import ConfigError, DataError
    from training.config import SEQUENCE_MODELS, load_config, resolve_flags
    from training.data.attributes import load_attributes
    from training.distributed import close, init_distributed, resolve_device
    from training.models.ranker import RankerConfig
    from training.pipeline import load_topic_data, load_training_data, run_training

    ctx = None
    try:  # a bad flag combination is a usage error (exit 2), before any data is read
        chosen, _, tcfg, _ = resolve_flags(load_config(config), model.value if model else None, flags)
        if ranker and (chosen not in ("sasrec", "twotower") or tcfg.refit):
            raise ConfigError("--ranker trains on the validation item, so it needs the retrieval "
                              "model without a refit: add --no-refit"
                              if chosen in ("sasrec", "twotower") else
                              f"--ranker ranks a sequence model's candidates, not {chosen}'s")
        if (distributed or device is not Device.cpu) and chosen not in SEQUENCE_MODELS:
            raise ConfigError(f"--distributed and --device train the sequence models "
                              f"({', '.join(SEQUENCE_MODELS)}), not {chosen}")
        on = resolve_device(device.value)
        if distributed:
            ctx = init_distributed(device.value, tcfg.threads)
            on = ctx.device
        negs = None
        if from_topic and tcfg.impression_negatives:
            if data is not None or synthetic:
                raise ConfigError("give exactly one of --data PATH, --synthetic or --from-topic")
            dataset, negs = load_topic_data(settings(), since, top_k=impression_top_k,
                                            window_ms=None if impression_window is None else int(impression_window * 1000),
                                            on_read=lambda msg: typer.echo(msg, err=True))
        else:
            dataset = load_training_data(data, synthetic=synthetic,
                                         topic=settings() if from_topic else None, since_ms=since,
                                         on_read=lambda msg: typer.echo(msg, err=True))
        attrs = load_attributes(attributes) if attributes is not None else None
        result = run_training(dataset, out, config=config, model=model.value if model else None,
                              flags=flags, index_type=index_type.value,
                              progress=not json_out and (ctx is None or ctx.is_main),
                              attributes=attrs,
                              ranker=RankerConfig(candidates=ranker_candidates) if ranker else None,
                              tower=tower, blend=blend, negatives=negs, ctx=ctx, device=on)
    except (ConfigError, DataError) as e:
        close(ctx)
        fail(str(e), 2)
    close(ctx)
    if ctx is not None and not ctx.is_main:
        return  # rank 0 reports, publishes and writes
    if publish and "bundle" in result:
        from serving.registry import publish_bundle

        result["announced"] = asyncio.run(publish_bundle(settings(), out)).uri
    print_json(result) if json_out else _print_metrics(result)


def _print_metrics(report: dict[str, Any]) -> None:
    head = {k: v for k, v in report.items() if not isinstance(v, dict)}
    typer.echo("  ".join(f"{k}={v}" for k, v in head.items()))
    for name, block in report.items():
        if name == "ranker":
            for stage, protos in block["test"].items():
                for proto, m in protos.items():
                    typer.echo(f"  {stage:17s} {proto:8s} HR@10 {m['hr@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}")
            typer.echo(f"  ranker enabled by default: {block['enabled']} (held-out validation NDCG@10 "
                       f"{block['holdout_valid']['ranker']['ndcg@10']:.4f} vs retrieval "
                       f"{block['holdout_valid']['retrieval']['ndcg@10']:.4f})")
        elif isinstance(block, dict):
            for proto, m in block.items():
                if isinstance(m, dict) and "hr@10" in m:
                    typer.echo(f"  {name:16s} {proto:8s} HR@10 {m['hr@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}")


@app.command("cold-start", rich_help_panel=DATA)
def cold_start(
    data: Annotated[Path, typer.Option(help="Sequence file.")],
    attributes: Annotated[Path, typer.Option(help="Item attributes (item2attributes JSON, or 'item<TAB>attrs' lines).")],
    cold_items: Annotated[float, typer.Option(min=0.001, max=0.9, help="Share of items held out of training.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the held-out items.")] = 0,
    config: Annotated[Path | None, typer.Option(help="TOML config (training/configs/*.toml); refit is off.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[float | None, typer.Option(min=0.1, help="Wall-clock budget per model.")] = None,
    id_dropout: Annotated[float | None, typer.Option(min=0.0, max=0.9)] = None,
    id_only: Annotated[bool, typer.Option("--id-only/--no-id-only", help="Also train the ID-only baseline (and its attribute map).")] = True,
    tower: Annotated[bool, typer.Option("--tower/--no-tower", help="Train SASRec with the item tower.")] = True,
    new_item_slot: Annotated[int, typer.Option(min=-1, max=1000, help="Also score each model as served with the new-item slot at this 0-based position (STREAMREC_RERANK_NEW_ITEM_SLOT); -1: not.")] = 9,
    slot_content_weight: Annotated[float, typer.Option(min=0.0, max=100.0, help="Also score the slot with its item chosen by vector score / |user| + this weight x attribute overlap (STREAMREC_RERANK_NEW_ITEM_CONTENT_WEIGHT), ungated and with a minimum key chosen on validation; 0: not.")] = 0.0,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Drop every user's last item first, so the protocol's test targets are the validation items: for choosing settings without the test split.")] = False,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/cold-start.json"),
) -> None:
    """The cold-start protocol: items never trained on, ranked from their attributes, vs baselines."""
    from bench.run import write_results
    from streamrec.errors import ConfigError, DataError
    from training.data.attributes import load_attributes
    from training.data.sequences import load_dataset, without_last_items
    from training.pipeline import run_cold_start

    flags = {"epochs": epochs, "max_minutes": max_minutes, "id_dropout": id_dropout}
    try:
        sequences = load_dataset(data)
        if tune:
            sequences = without_last_items(sequences)
        report = run_cold_start(sequences, load_attributes(attributes), config=config,
                                flags=flags, fraction=cold_items, seed=seed, id_only=id_only,
                                tower=tower, slot=new_item_slot, content_weight=slot_content_weight)
        report["tune"] = tune
    except (ConfigError, DataError) as e:
        fail(str(e), 2)
    write_results(out, report)
    for name, block in report.items():
        if isinstance(block, dict):
            typer.echo(f"  {name:26s} cold ({block['cold_users']} users) HR@10 "
                       f"{block['cold']['hr@10']:.4f} NDCG@10 {block['cold']['ndcg@10']:.4f}   warm "
                       f"HR@10 {block['warm']['hr@10']:.4f} NDCG@10 {block['warm']['ndcg@10']:.4f}"
                       + _gate_setting(block))
    typer.echo(f"wrote {out}")


@app.command(rich_help_panel=DATA)
def protocol(
    data: Annotated[Path, typer.Option(help="Sequence file or MovieLens ratings.dat.")],
    config: Annotated[Path | None, typer.Option(help="TOML config (training/configs/*.toml): the model and its fixed budget.")] = None,
    attributes: Annotated[Path | None, typer.Option(help="Item attributes: the item tower, and the content blend's rows.")] = None,
    tower: Annotated[bool, typer.Option("--tower/--no-tower", help="With --attributes: the item tower (off: ID-only, the attributes feed the blend only).")] = True,
    blend: Annotated[bool, typer.Option("--blend/--no-blend", help="With --attributes: the content blend's row, its weight chosen on validation.")] = True,
    refit: Annotated[bool, typer.Option("--refit/--no-refit", help="Also the refit row (retrained on train + validation).")] = True,
    seeds: Annotated[int, typer.Option(min=1, max=20, help="How many seeds: first-seed, first-seed + 1, …")] = 3,
    first_seed: Annotated[int, typer.Option(min=0)] = 0,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/protocol.json"),
    bundles: Annotated[Path | None, typer.Option(help="Also export each seed's models here as bundles (seed-N-no_refit, seed-N-refit), each scored again from its bundle as `streamrec evaluate` does.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_minutes: Annotated[float | None, typer.Option(min=0.1, help="Wall-clock budget of each selection run.")] = None,
    patience: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(min=1e-6, max=1.0)] = None,
    weight_decay: Annotated[float | None, typer.Option(min=0.0)] = None,
    samples: Annotated[Samples | None, typer.Option(help="Training samples (as train's --samples).")] = None,
    max_len: Annotated[int | None, typer.Option(min=2)] = None,
    dropout: Annotated[float | None, typer.Option(min=0.0, max=0.9)] = None,
    lowpass: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    positions: Annotated[Positions | None, typer.Option(help="SASRec's positions (as train's --positions).")] = None,
    causal: Annotated[bool | None, typer.Option("--causal/--bidirectional", help="SASRec's attention (as train's --causal/--bidirectional).")] = None,
    lowpass_freqs: Annotated[int | None, typer.Option(min=0, help="As train's --lowpass-freqs.")] = None,
    norm: Annotated[Norm | None, typer.Option(help="SASRec's layer norms (as train's --norm).")] = None,
    ffn_mult: Annotated[int | None, typer.Option(min=1, help="SASRec's feed-forward width (as train's --ffn-mult).")] = None,
    ema: Annotated[float | None, typer.Option(min=0.0, max=0.9999, help="A moving average of the weights (as train's --ema).")] = None,
    lr_plateau: Annotated[int | None, typer.Option(min=0, help="As train's --lr-plateau.")] = None,
    lr_factor: Annotated[float | None, typer.Option(min=0.01, max=0.99, help="As train's --lr-factor.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads (as train's --threads): one per process for seeds run side by side.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="One line per epoch.")] = False,
) -> None:
    """Leak-proof quality figures: per seed, settings chosen on validation, test scored once, no refit and refit rows."""
    from bench.run import write_results
    from streamrec.errors import ConfigError, DataError
    from training.data.attributes import load_attributes
    from training.data.sequences import load_dataset
    from training.protocol import protocol_config, run_protocol, table

    if out.suffix != ".json":
        fail(f"--out must name a .json file, not {out}", 2)
    if attributes is None and not tower:
        fail("--no-tower needs --attributes", 2)
    flags = {"epochs": epochs, "max_minutes": max_minutes, "patience": patience,
             "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
             "samples": samples.value if samples else None, "max_len": max_len,
             "dropout": dropout, "lowpass": lowpass, "positions": positions.value if positions else None,
             "causal": causal, "lowpass_freqs": lowpass_freqs, "norm": norm.value if norm else None,
             "ffn_mult": ffn_mult, "ema": ema, "lr_plateau": lr_plateau, "lr_factor": lr_factor,
             "threads": threads}
    try:
        protocol_config(config, flags)  # a bad configuration fails before any data is read
        sequences = load_dataset(data)
        attrs = load_attributes(attributes) if attributes is not None else None
        report = run_protocol(sequences, config=config, flags=flags,
                              seeds=list(range(first_seed, first_seed + seeds)), attributes=attrs,
                              tower=tower, blend=blend, refit=refit, progress=progress,
                              bundles=bundles, on_seed=lambda partial: _protocol_partial(out, partial))
    except (ConfigError, DataError) as e:
        fail(str(e), 2)
    write_results(out, report)
    typer.echo(table(report))
    typer.echo(f"wrote {out}")


@app.command("protocol-merge", rich_help_panel=DATA)
def protocol_merge(
    files: Annotated[list[Path], typer.Argument(help="Results files of `streamrec protocol`, the same run over other seeds.")],
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/protocol.json"),
) -> None:
    """One results file (and table) from protocol runs over different seeds, e.g. one process a seed."""
    import orjson

    from bench.run import write_results
    from streamrec.errors import ConfigError
    from training.protocol import merge_reports, table

    if out.suffix != ".json":
        fail(f"--out must name a .json file, not {out}", 2)
    reports = []
    for f in files:
        try:
            reports.append(orjson.loads(f.read_bytes()))
        except OSError as e:
            fail(f"cannot read {f}: {e.strerror or e}", 2)
        except orjson.JSONDecodeError as e:
            fail(f"{f} is not JSON: {e}", 2)
    try:
        merged = merge_reports(reports, [str(f) for f in files])
    except ConfigError as e:
        fail(str(e), 2)
    write_results(out, merged)
    typer.echo(table(merged))
    typer.echo(f"wrote {out}")


def _protocol_partial(out: Path, partial: dict[str, Any]) -> None:
    """After each seed: the results so far (``complete`` false), and a line on stderr."""
    from bench.run import write_results

    write_results(out, partial)
    run = partial["runs"][-1]
    typer.echo(f"seed {run['seed']}: chosen {run['chosen']}, {run['seconds']['total']:.0f} s; "
               f"results so far in {out}", err=True)


def _gate_setting(block: dict[str, Any]) -> str:
    """The gate a ``*_gated`` row chose on validation, as the worker's setting."""
    if "min_key" in block:
        return f"   (STREAMREC_RERANK_NEW_ITEM_MIN_KEY={block['min_key']})"
    if "within" in block:
        return f"   (STREAMREC_RERANK_NEW_ITEM_WITHIN={block['within']})"
    return ""


@app.command(rich_help_panel=DATA)
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: Annotated[Path, typer.Option(help="Sequence file or MovieLens ratings.dat.")],
    split: SplitName = SplitName.test,
    seed: Annotated[int, typer.Option(help="Seed of the sampled protocol's negatives.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Evaluate a bundle as served (ONNX + FAISS), full ranking and 100-negative sampled."""
    from training.data.sequences import load_dataset
    from training.evaluation.bundle import evaluate_bundle

    if not (bundle / "manifest.json").is_file():
        fail(f"{bundle} is not a bundle directory (no manifest.json)", 2)
    result = evaluate_bundle(bundle, load_dataset(data), split.value, seed)
    if json_out:
        print_json(result)
        return
    typer.echo(f"bundle {result['bundle']}, {result['users']} users, split {split.value}")
    for proto in ("full", "sampled"):
        m = result[proto]
        typer.echo(f"  {proto:8s} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))


class Similarity(str, Enum):
    attributes = "attributes"
    vectors = "vectors"


class Ranking(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


@app.command("evaluate-lists", rich_help_panel=DATA)
def evaluate_lists(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: Annotated[Path, typer.Option(help="Sequence file.")],
    attributes: Annotated[Path, typer.Option(help="Item attributes (diversity is measured on them).")],
    lambdas: Annotated[str, typer.Option(help="MMR λ values, comma-separated (1 = no MMR).")] = "1,0.9,0.8,0.7,0.5",
    similarity: Annotated[Similarity, typer.Option(help="MMR's similarity: attribute Jaccard or vector cosine.")] = Similarity.attributes,
    candidates: Annotated[int, typer.Option(min=10, max=5000)] = 200,
    ranking: Annotated[Ranking, typer.Option(help="The bundle's ranker: auto = as training enabled it.")] = Ranking.auto,
    top_n: Annotated[int, typer.Option(min=1, max=200)] = 10,
    out: Annotated[Path, typer.Option(help="JSON results file.")] = Path("results/lists.json"),
) -> None:
    """List metrics of a bundle's funnel (test split): NDCG/HR, diversity, coverage, novelty per MMR λ."""
    from bench.run import write_results
    from streamrec.errors import ConfigError, DataError
    from training.data.attributes import load_attributes
    from training.data.sequences import load_dataset
    from training.evaluation.list_metrics import bundle_lists

    try:
        lams = [float(x) for x in lambdas.split(",") if x.strip()]
    except ValueError:
        fail(f"--lambdas must be numbers, comma-separated; got {lambdas!r}", 2)
    if not lams or any(not 0.0 <= x <= 1.0 for x in lams):
        fail(f"--lambdas must be in [0, 1]; got {lambdas!r}", 2)
    if not (bundle / "manifest.json").is_file():
        fail(f"{bundle} is not a bundle directory (no manifest.json)", 2)
    try:
        report = bundle_lists(bundle, load_dataset(data), load_attributes(attributes), lams,
                              similarity.value, candidates, ranking.value, top_n)
    except (ConfigError, DataError) as e:
        fail(str(e), 2)
    write_results(out, report)
    typer.echo(f"bundle {report['bundle']}, {report['users']} users, ranker {report['ranker']}")
    typer.echo(f"  {'λ':>5s}  HR@{top_n:<3d} NDCG@{top_n:<3d} diversity coverage novelty")
    for r in report["rows"]:
        typer.echo(f"  {r['lambda']:5.2f}  {r[f'hr@{top_n}']:.4f} {r[f'ndcg@{top_n}']:.4f}   "
                   f"{r['diversity']:.4f}    {r['coverage']:.4f}   {r['novelty']:.2f}")
    typer.echo(f"wrote {out}")
