"""Does training with impression hard negatives beat training without them (offline)?

A click log with impressions is simulated from the synthetic generator: each user's
clicks follow the generated sequence, one second apart, and just before each click the
user is shown a popularity list (the ``top_k`` most clicked items of the training data
that the user has not clicked yet), written half a second before it. A click names the
list (``list_id``) when its item is in it. The same :func:`training.data.from_topic.encode_negatives`
the topic reader uses turns the log into per-position negatives.

Three arms train SASRec with the sampled loss on the same data, seeds and epoch budget
(``uniform``: the shared uniform negatives; ``uniform_matched``: as many more uniform ones
as the impressions arm adds; ``impressions``: the shared ones plus ``n`` impression and
``n`` uniform negatives per position)
(early stopping on validation NDCG@10 picks the epoch); the test split's full-catalogue
NDCG@10 / HR@10 are compared.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.from_topic import Click, Impressions, encode_negatives
from training.data.sequences import SequenceData, item_counts, leave_one_out
from training.data.synthetic import SyntheticSpec, generate
from training.models.train import TrainConfig
from training.pipeline import train_and_export

T0 = 1_700_000_000_000


@dataclass(frozen=True)
class SimulatedLog:
    clicks: list[list[Click]]  # per user of the data
    impressions: Impressions


def simulate_log(data: SequenceData, top_k: int = 10) -> SimulatedLog:
    """Clicks following ``data`` and a popularity list shown before each one (see the module)."""
    counts = item_counts(leave_one_out(data).train, data.num_items)
    ranked = [int(i) for i in np.argsort(-counts[1:], kind="stable") + 1]
    imps = Impressions()
    clicks: list[list[Click]] = []
    for user, seq in zip(data.users, data.seqs, strict=True):
        seen: set[int] = set()
        row: list[Click] = []
        for j, item in enumerate(seq):
            ts = T0 + j * 1000
            shown = [i for i in ranked[:top_k + len(seen)] if i not in seen][:top_k]
            lid = f"{user}:{j}"
            imps.add(lid, user, ts - 500, data.vocab.decode(shown), None)
            row.append(Click(data.vocab.decode([item])[0], ts, lid if item in shown else None))
            seen.add(item)
        clicks.append(row)
    return SimulatedLog(clicks, imps)


def run(spec: SyntheticSpec, seeds: list[int], epochs: int, impression_negatives: int,
        negatives: int, out_dir: Path, top_k: int = 10, window_ms: int | None = None,
        mcfg: dict[str, Any] | None = None) -> dict[str, Any]:
    data = generate(spec)
    log = simulate_log(data, top_k)
    negs = encode_negatives(data, log.clicks, log.impressions, top_k, window_ms)
    mcfg = mcfg or {"max_len": 50, "dim": 32, "layers": 1, "heads": 1, "dropout": 0.2}
    arms: dict[str, list[dict[str, Any]]] = {"uniform": [], "uniform_matched": [], "impressions": []}
    # uniform_matched: as many negatives per position as the impressions arm, all uniform
    grid = (("uniform", 0, negatives), ("uniform_matched", 0, negatives + 2 * impression_negatives),
            ("impressions", impression_negatives, negatives))
    for seed in seeds:
        for arm, n, k in grid:
            tcfg = TrainConfig(epochs=epochs, loss="sampled", negatives=k,
                               impression_negatives=n, patience=max(epochs // 4, 2), seed=seed)
            rep = train_and_export(data, out_dir / f"{arm}-{seed}", dict(mcfg), tcfg, progress=False,
                                   negatives=negs if n else None, blend=False)
            arms[arm].append({"seed": seed, "best_epoch": rep.best_epoch, "valid": rep.valid,
                              "test": rep.test["full"]})
    summary = {arm: {m: {"mean": statistics.mean(r["test"][m] for r in rows),
                         "stdev": statistics.stdev(r["test"][m] for r in rows) if len(rows) > 1 else 0.0}
                     for m in ("ndcg@10", "hr@10")} for arm, rows in arms.items()}
    return {"spec": spec.__dict__, "seeds": seeds, "epochs": epochs, "negatives": negatives,
            "impression_negatives": impression_negatives, "top_k": top_k, "model": mcfg,
            "positions_with_negatives": sum(1 for u in negs for p in u[1:] if p),
            "positions": sum(max(len(u) - 1, 0) for u in negs),
            "runs": arms, "summary": summary}
