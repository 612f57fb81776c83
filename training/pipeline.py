"""Train -> evaluate -> export, as one call (what ``streamrec train`` runs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.manifest import Manifest
from training.baselines import BPRConfig, bpr_metrics, popularity_metrics, train_bpr
from training.data import SequenceData, item_counts, leave_one_out
from training.evaluate import encode_all, evaluate_vectors
from training.export import write_bundle
from training.model import SASRecConfig
from training.train import TrainConfig, torch_encode, train_sasrec

POPULAR_K = 500


@dataclass(frozen=True)
class TrainReport:
    manifest: Manifest
    bundle: Path
    seconds: float
    epochs: int
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, dict[str, float]]  # {"full": …, "sampled": …}
    popularity_test: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"model": "sasrec", "version": self.manifest.version, "bundle": str(self.bundle),
                "train_seconds": round(self.seconds, 1), "epochs": self.epochs,
                "best_epoch": self.best_epoch,
                "seconds_per_epoch": round(self.seconds / max(self.epochs, 1), 2),
                "valid": {"full": self.valid}, "test": self.test,
                "popularity_test": self.popularity_test}


def train_and_export(data: SequenceData, out: Path, mcfg: dict[str, Any], tcfg: TrainConfig,
                     progress: bool = True, index_type: str = "auto") -> TrainReport:
    split = leave_one_out(data)
    counts = item_counts(split.train, data.num_items)
    result = train_sasrec(split, SASRecConfig(num_items=data.num_items, **mcfg), tcfg, progress)
    valid = {k: v for k, v in result.valid.items() if "@" in k}
    model = result.model
    inputs = split.inputs("test")
    users = encode_all(torch_encode(model), inputs, model.cfg.max_len)
    test = evaluate_vectors(users, model.item_vectors()[1:].detach().numpy(), inputs,
                            split.targets("test"))
    pop = popularity_metrics(split, "test")
    popular = (np.argsort(-counts[1:], kind="stable")[:POPULAR_K] + 1).tolist()
    t0 = time.monotonic()
    manifest = write_bundle(
        model, data.vocab, inputs, popular, out,
        metrics={"valid": {"full": valid}, "test": test, "popularity_test": pop,
                 "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                 "train_seconds": round(result.seconds, 1),
                 "protocol": "leave-one-out; full = all items, history masked; sampled = 100 "
                             "uniform unseen negatives, seed 0"},
        dataset=data.describe(), train_config=tcfg.to_dict(), index_type=index_type)
    return TrainReport(manifest, out, result.seconds + time.monotonic() - t0, result.epochs_run,
                       result.best_epoch, valid, test, pop)


def run_baseline(model: str, data: SequenceData, cfg: BPRConfig, progress: bool = True) -> dict[str, Any]:
    """Most-popular or BPR-MF on the same split and protocols. Baselines export no bundle."""
    split = leave_one_out(data)
    if model == "pop":
        return {"model": "pop", "valid": popularity_metrics(split, "valid"),
                "test": popularity_metrics(split, "test")}
    bpr, valid, best_epoch, seconds = train_bpr(split, cfg, progress)
    return {"model": "bpr", "train_seconds": round(seconds, 1), "best_epoch": best_epoch,
            "valid": {"full": valid}, "test": bpr_metrics(bpr, split, "test")}
