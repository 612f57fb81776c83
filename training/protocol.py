"""The evaluation protocol behind the model-quality tables (``streamrec protocol``).

Per seed, one sequence model is trained on the training split with the
configuration's fixed budget (``epochs`` and ``patience``; its ``max_minutes`` only
where a flag sets it, since a wall-clock budget depends on the machine's load), and every
setting is chosen on the validation split: the epoch (early stopping on validation
NDCG@10) and, with attributes, the content blend's weight. The refit row retrains
a fresh model on everything but the test items for the chosen epoch count (what
the shipped configurations serve). Only then is the test split scored, once per
row: full ranking (history masked) and sampled.

The choosing half never holds the test targets: it runs on a copy of the split
whose test targets are sealed (all PAD), and the real ones are read by
:func:`_score` alone, after every choice is made.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrec.errors import ConfigError
from training.config import SEQUENCE_MODELS, load_config, resolve_flags
from training.data.attributes import ItemAttributes
from training.data.sequences import SequenceData, Split, leave_one_out
from training.evaluation.evaluate import encode_all, evaluate_vectors
from training.models.blend import blend_of, blend_test, fit_blend
from training.models.retrieval import RetrievalModel, SASRecConfig, TwoTowerConfig
from training.models.train import TrainConfig, TrainResult, refit_sasrec, torch_encode, train_sasrec

BLEND_CANDIDATES = 200  # as training.pipeline: the worker's default STREAMREC_CANDIDATES
ROWS = ("no_refit", "no_refit_blend", "refit")
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def sealed(split: Split) -> Split:
    """``split`` with its test targets replaced by PAD: what every choice is made on."""
    return replace(split, test_target=np.zeros_like(split.test_target))


@dataclass
class _Chosen:
    """One seed's choices, made without the test targets."""

    selected: TrainResult  # no refit: the epoch chosen on validation
    refit: TrainResult | None
    blend: dict[str, Any] | None  # fit_blend's report (validation only)
    blend_obj: Any = None  # the chosen serving.content_blend.ContentBlend


def _choose(split: Split, mcfg: Any, tcfg: Any, item_attrs: torch.Tensor | None,
            attributes: ItemAttributes | None, blend: bool, refit: bool,
            progress: bool) -> _Chosen:
    """Train, pick the epoch and the blend's weight on validation, and refit: on a split
    whose test targets are sealed."""
    selected = train_sasrec(split, mcfg, replace(tcfg, refit=False), progress, item_attrs)
    report, chosen_blend = None, None
    if attributes is not None and blend:
        model = selected.model
        v_inputs = split.inputs("valid")
        users = encode_all(torch_encode(model), v_inputs, model.window)
        chosen_blend, report = fit_blend(attributes, split.data.vocab.ids, _items(model),
                                         (users, v_inputs, split.valid_target), None,
                                         BLEND_CANDIDATES, model.cfg.max_len)
    again = (refit_sasrec(split, selected, mcfg, replace(tcfg, refit=True), progress, item_attrs)
             if refit else None)
    return _Chosen(selected, again, report, chosen_blend)


def _items(model: RetrievalModel) -> np.ndarray:
    return model.item_vectors()[1:].detach().numpy()


def _score(model: RetrievalModel, split: Split) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """The test split, scored once: user vectors and both protocols' figures."""
    inputs = split.inputs("test")
    users = encode_all(torch_encode(model), inputs, model.window)
    return users, evaluate_vectors(users, _items(model), inputs, split.targets("test"))


def export_row(model: RetrievalModel, split: Split, out: Path, test: dict[str, dict[str, float]],
               tcfg: Any, row: str, attributes: ItemAttributes | None = None) -> dict[str, Any]:
    """Write ``model`` as a bundle to ``out`` and score it as ``streamrec evaluate`` does
    (ONNX encoder, the index's stored vectors): the path and the largest difference from
    the protocol's own ``test`` figures, over both protocols and every metric. A model
    with an item tower is exported with its ``attributes``."""
    from training.data.sequences import item_counts
    from training.evaluation.bundle import evaluate_bundle
    from training.export.bundle import write_bundle
    from training.pipeline import popular_items

    popular = popular_items(item_counts(split.train, split.data.num_items))
    write_bundle(model, split.data.vocab, split.inputs("test"), popular, out,
                 metrics={"test": test, "protocol_row": row, "seed": tcfg.seed},
                 dataset=split.data.describe(), train_config=tcfg.to_dict(),
                 attributes=attributes if model.attr_emb is not None else None)
    served = evaluate_bundle(out, split.data, "test", 0)
    diff = max(abs(served[proto][m] - test[proto][m]) for proto in test for m in test[proto])
    return {"path": str(out), "max_abs_diff": diff, "test": {p: served[p] for p in test}}


def run_seed(data: SequenceData, mcfg: Any, tcfg: Any, item_attrs: torch.Tensor | None,
             attributes: ItemAttributes | None, *, blend: bool = True, refit: bool = True,
             progress: bool = False, bundles: Path | None = None) -> dict[str, Any]:
    """One seed (``tcfg.seed``) of the protocol: the choices, then each row's test figures.
    With ``bundles``, each model row is also exported there (``seed-N-no_refit``,
    ``seed-N-refit``) and scored from its bundle (:func:`export_row`)."""
    split = leave_one_out(data)
    t0 = time.monotonic()
    chosen = _choose(sealed(split), mcfg, tcfg, item_attrs, attributes, blend, refit, progress)
    seconds = time.monotonic() - t0
    sel = chosen.selected
    out: dict[str, Any] = {
        "seed": tcfg.seed,
        "chosen": {"best_epoch": sel.best_epoch, "epochs_run": sel.epochs_run,
                   **({"blend_beta_relative": chosen.blend["beta_relative"],
                       "blend_enabled": chosen.blend["enabled"]} if chosen.blend else {})},
        "valid": {"no_refit": {"full": {k: v for k, v in sel.valid.items() if "@" in k}},
                  **({"no_refit_blend": {"full": chosen.blend["valid"]["blend"]}}
                     if chosen.blend else {})},
        "seconds": {"selection": round(sel.seconds, 1),
                    **({"refit": round(chosen.refit.seconds - sel.seconds, 1)} if chosen.refit else {}),
                    "total": round(seconds, 1)},
        "test": {}}
    # the test split: read here, once per row, after every choice above
    users, out["test"]["no_refit"] = _score(sel.model, split)
    if chosen.blend is not None:
        model = sel.model
        test = blend_test(blend_of(attributes, split.data.vocab.ids, BLEND_CANDIDATES,  # type: ignore[arg-type]
                                   model.cfg.max_len),
                          chosen.blend_obj, _items(model), (users, split.inputs("test"), split.test_target),
                          BLEND_CANDIDATES)
        out["test"]["no_refit_blend"] = {"full": test["blend"]}
    if chosen.refit is not None:
        _, out["test"]["refit"] = _score(chosen.refit.model, split)
    if bundles is not None:
        models = {"no_refit": sel.model, "refit": chosen.refit.model if chosen.refit else None}
        out["bundles"] = {row: export_row(m, split, bundles / f"seed-{tcfg.seed}-{row}",
                                          out["test"][row], tcfg, row, attributes)
                          for row, m in models.items() if m is not None}
    return out


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation (n - 1; 0 for one seed) over the seeds, per row,
    protocol and metric."""
    out: dict[str, Any] = {}
    for row in ROWS:
        per = [s["test"][row] for s in seeds if row in s["test"]]
        if not per:
            continue
        out[row] = {}
        for proto in per[0]:
            out[row][proto] = {}
            for m in METRICS:
                values = [p[proto][m] for p in per]
                out[row][proto][m] = {"mean": statistics.fmean(values),
                                      "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def protocol_config(config: Path | None, flags: dict[str, Any]) -> tuple[str, dict[str, Any], TrainConfig]:
    """The model, its configuration and the training budget the protocol runs (a
    :class:`ConfigError` for what it cannot: a baseline, impression negatives). The file's
    ``max_minutes`` is dropped; a ``max_minutes`` flag sets one."""
    chosen_model, mcfg, tcfg, _ = resolve_flags(load_config(config), None, flags)
    if chosen_model not in SEQUENCE_MODELS:
        raise ConfigError(f"the protocol trains a sequence model ({', '.join(SEQUENCE_MODELS)}), "
                          f"not {chosen_model}")
    if tcfg.impression_negatives:
        raise ConfigError("the protocol reads a data file: impression negatives need --from-topic")
    if flags.get("max_minutes") is None:
        # the budget is the file's epochs and patience: a wall-clock budget from the file would
        # make the figures depend on how busy the machine was
        tcfg = replace(tcfg, max_minutes=None)
    return chosen_model, mcfg, tcfg


def run_protocol(data: SequenceData, *, config: Path | None, flags: dict[str, Any], seeds: list[int],
                 attributes: ItemAttributes | None = None, tower: bool = True, blend: bool = True,
                 refit: bool = True, progress: bool = False, bundles: Path | None = None,
                 on_seed: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The protocol over ``seeds`` (module docstring): per seed and row, the choices and the
    test figures, then mean ± std over the seeds, with the budget and wall-clock time.
    ``bundles``: a directory to export each seed's models to, each scored from its bundle.
    ``on_seed`` gets the report so far (``complete`` false) after each seed but the last."""
    from training.pipeline import tower_inputs

    if not seeds:
        raise ConfigError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must differ: {seeds}")
    if not tower and attributes is None:
        raise ConfigError("--no-tower needs --attributes")
    chosen_model, mcfg, tcfg = protocol_config(config, flags)
    cfg, item_attrs = tower_inputs(data, attributes if tower else None, mcfg, chosen_model)
    start = time.monotonic()
    runs: list[dict[str, Any]] = []

    def report(complete: bool) -> dict[str, Any]:
        return {
            "protocol": "leave-one-out; every setting chosen on the validation split (the test "
                        "targets sealed meanwhile), then test scored once per row; full = all "
                        "items, history masked; sampled = 100 uniform unseen negatives, seed 0; "
                        "no_refit = trained on the training split only (the published protocol); "
                        "refit = retrained on train + validation for the chosen epoch count",
            "complete": complete, "dataset": data.describe(),
            "config": None if config is None else str(config), "model": chosen_model,
            "model_config": cfg.to_dict(), "train_config": tcfg.to_dict() | {"seed": None},
            "flags": {k: v for k, v in flags.items() if v is not None},
            "attributes": attributes is not None, "tower": bool(tower and attributes is not None),
            "seeds": [r["seed"] for r in runs] if not complete else seeds, "runs": list(runs),
            "summary": summarise(runs), "wall_clock_seconds": round(time.monotonic() - start, 1),
            "torch_threads": torch.get_num_threads()}

    for seed in seeds:
        runs.append(run_seed(data, cfg, replace(tcfg, seed=seed), item_attrs, attributes,
                             blend=blend, refit=refit, progress=progress, bundles=bundles))
        if on_seed is not None and len(runs) < len(seeds):
            on_seed(report(complete=False))
    return report(complete=True)


# what must agree for runs of separate processes to be one result (the configuration's
# contents, not the path it was given by: "config" is left out)
SAME = ("protocol", "dataset", "model", "model_config", "train_config", "flags",
        "attributes", "tower")


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _filled(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the keys its configurations lack set to their defaults: a setting
    added after a report was written (at its default, it changes nothing) does not keep
    that report from merging with later ones."""
    model_cls = TwoTowerConfig if report.get("model") == "twotower" else SASRecConfig
    out = dict(report)
    for key, cls in (("model_config", model_cls), ("train_config", TrainConfig)):
        if isinstance(report.get(key), dict):
            out[key] = {**_defaults(cls), **report[key]}
    return out


def merge_reports(reports: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """One report from complete reports of the same protocol run over different seeds (each
    seed in its own process, say): the runs by seed, the summary over all of them, and
    the wall-clock seconds added up. A :class:`ConfigError` names what differs."""
    names = names or [f"report {i + 1}" for i in range(len(reports))]
    if len(reports) < 2:
        raise ConfigError("give at least two results files to merge")
    reports = [_filled(r) if isinstance(r, dict) else r for r in reports]
    first = reports[0]
    seen: dict[int, str] = {}
    rows = None
    for name, r in zip(names, reports, strict=True):
        missing = ([k for k in (*SAME, "runs", "complete", "wall_clock_seconds") if k not in r]
                   if isinstance(r, dict) else ["object"])
        if not missing and not all(isinstance(run, dict) and "seed" in run and "test" in run
                                   for run in r["runs"]):
            missing = ["seed and test figures in every run"]
        if missing:
            raise ConfigError(f"{name} is not a protocol results file (no {', '.join(missing)})")
        if not r["complete"]:
            raise ConfigError(f"{name} is incomplete (its run stopped before its last seed)")
        for key in SAME:
            if r[key] != first[key]:
                raise ConfigError(f"{name} differs from {names[0]} in {key}: "
                                  f"{r[key]!r} against {first[key]!r}")
        for run in r["runs"]:
            if rows is None:
                rows = sorted(run["test"])
            elif sorted(run["test"]) != rows:  # --refit/--blend are not flags: compare the rows
                raise ConfigError(f"seed {run['seed']} of {name} has the rows {sorted(run['test'])}, "
                                  f"other seeds {rows}: runs with other --refit or --blend settings")
            if run["seed"] in seen:
                raise ConfigError(f"seed {run['seed']} is in both {seen[run['seed']]} and {name}")
            seen[run["seed"]] = name
    runs = sorted((run for r in reports for run in r["runs"]), key=lambda run: run["seed"])
    return {**first, "seeds": [run["seed"] for run in runs], "runs": runs, "summary": summarise(runs),
            "wall_clock_seconds": round(sum(r["wall_clock_seconds"] for r in reports), 1),
            "merged_from": names}


def table(report: dict[str, Any]) -> str:
    """The summary as a plain-text table: one line per row and protocol, mean ± std."""
    clock = ("wall-clock of its runs added up" if report.get("merged_from") else "wall-clock")
    head = (f"{report['dataset']['name']}: seeds {report['seeds']}, "
            f"{report['wall_clock_seconds']:.0f} s {clock}")
    lines = [head,
             f"{'row':15s} {'protocol':8s} {'HR@10':>17s} {'NDCG@10':>17s} {'HR@20':>17s} {'NDCG@20':>17s}"]
    for row, protos in report["summary"].items():
        for proto, m in protos.items():
            cells = " ".join(f"{m[k]['mean']:.4f} ± {m[k]['std']:.4f}" for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20"))
            lines.append(f"{row:15s} {proto:8s} {cells}")
    for run in report["runs"]:
        lines.append(f"seed {run['seed']}: chosen {run['chosen']}, seconds {run['seconds']}")
        for row, b in run.get("bundles", {}).items():
            lines.append(f"seed {run['seed']} {row}: bundle {b['path']}, scored from it: "
                         f"largest difference {b['max_abs_diff']:.2g}")
    return "\n".join(lines)
