"""A timing bundle with random weights in the shape of a real one (Beauty by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from serving.vocab import Vocabulary
from training.export.bundle import write_bundle
from training.models.retrieval import SASRec, SASRecConfig

TORCH_WEIGHTS = "torch-weights.pt"  # beside the bundle, for the naive (torch eager) baseline


def random_bundle(out: Path, items: int = 12_101, max_len: int = 50, dim: int = 64, layers: int = 2,
                  heads: int = 2, seed: int = 0, positions: str = "start") -> Path:
    """Write (once) a bundle of a randomly initialised SASRec; returns its directory."""
    bundle = out / f"random-{items}x{dim}-L{max_len}-{positions}"
    if (bundle / "manifest.json").is_file():
        return bundle
    torch.manual_seed(seed)
    cfg = SASRecConfig(num_items=items, max_len=max_len, dim=dim, layers=layers, heads=heads,
                       positions=positions)
    model = SASRec(cfg).eval()
    rng = np.random.default_rng(seed)
    samples = [rng.integers(1, items + 1, int(n)).tolist() for n in rng.integers(1, max_len, 64)]
    write_bundle(model, Vocabulary(tuple(f"i{i}" for i in range(1, items + 1))), samples,
                 list(range(1, 501)), bundle, metrics={"note": "random weights, timing only"},
                 dataset={"name": "random"}, train_config={})
    torch.save({"config": cfg.to_dict(), "state": model.state_dict()}, out / f"{bundle.name}.{TORCH_WEIGHTS}")
    return bundle


def torch_weights(bundle: Path) -> Path:
    return bundle.parent / f"{bundle.name}.{TORCH_WEIGHTS}"
