"""Train -> evaluate -> export, as one call (what ``streamrec train`` runs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.manifest import Manifest
from training.data import SequenceData, item_counts, leave_one_out
from training.evaluate import popularity_ranks
from training.export import write_bundle
from training.metrics import hr_ndcg
from training.model import SASRecConfig
from training.train import TrainConfig, evaluate_model, train_sasrec

POPULAR_K = 500


@dataclass(frozen=True)
class TrainReport:
    manifest: Manifest
    bundle: Path
    seconds: float
    epochs: int
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    popularity_test: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.manifest.version, "bundle": str(self.bundle),
                "train_seconds": round(self.seconds, 1), "epochs": self.epochs,
                "best_epoch": self.best_epoch, "valid": self.valid, "test": self.test,
                "popularity_test": self.popularity_test}


def train_and_export(data: SequenceData, out: Path, mcfg: dict[str, Any], tcfg: TrainConfig,
                     progress: bool = True) -> TrainReport:
    split = leave_one_out(data)
    counts = item_counts(split.train, data.num_items)
    result = train_sasrec(split, SASRecConfig(num_items=data.num_items, **mcfg), tcfg, progress)
    valid = {k: v for k, v in result.valid.items() if "@" in k}
    test = evaluate_model(result.model, split, "test")
    pop = hr_ndcg(popularity_ranks(counts, split.inputs("test"), split.targets("test")))
    popular = (np.argsort(-counts[1:], kind="stable")[:POPULAR_K] + 1).tolist()
    t0 = time.monotonic()
    manifest = write_bundle(
        result.model, data.vocab, split.inputs("test"), popular, out,
        metrics={"valid": valid, "test": test, "popularity_test": pop,
                 "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                 "train_seconds": round(result.seconds, 1), "protocol": "full ranking, history masked"},
        dataset=data.describe(), train_config=tcfg.to_dict())
    return TrainReport(manifest, out, result.seconds + time.monotonic() - t0, result.epochs_run,
                       result.best_epoch, valid, test, pop)
