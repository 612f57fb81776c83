"""Baselines every model must beat: most-popular, and matrix factorisation trained with BPR.

The seed article's golden rule: a deep model that does not beat MF by at least
5% points to a data problem, not an architecture problem. BPR-MF (Rendle et
al., 2009) learns a user and an item vector; the score is their inner product.
It ranks with the same code as SASRec (``training.evaluation.evaluate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data.sequences import Split, item_counts
from training.evaluation.evaluate import full_ranks_of, popularity_ranks, popularity_sampled_ranks
from training.evaluation.ranking_metrics import hr_ndcg
from training.models.early_stop import EarlyStopping
from training.models.progress import epochs
from training.models.train import seed_everything


@dataclass
class BPRConfig:
    dim: int = 64
    epochs: int = 200
    batch_size: int = 4096
    lr: float = 5e-3
    reg: float = 1e-5  # L2 on the vectors in each batch
    patience: int = 10
    seed: int = 42


class BPRMF(nn.Module):
    def __init__(self, users: int, items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(users, dim)
        self.item = nn.Embedding(items + 1, dim, padding_idx=0)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)

    def loss(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, reg: float) -> torch.Tensor:
        pu, qi, qj = self.user(u), self.item(i), self.item(j)  # (B, D) each
        margin = (pu * (qi - qj)).sum(-1)
        l2 = pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()
        return -F.logsigmoid(margin).mean() + reg * l2 / len(u)


def popularity_metrics(split: Split, which: str, seed: int = 0) -> dict[str, dict[str, float]]:
    counts = item_counts(split.train, split.data.num_items)
    inputs, targets = split.inputs(which), split.targets(which)
    return {"full": hr_ndcg(popularity_ranks(counts, inputs, targets)),
            "sampled": hr_ndcg(popularity_sampled_ranks(counts, inputs, targets, seed))}


def _user_rows(model: BPRMF, split: Split) -> np.ndarray:
    return model.user.weight.detach().numpy()[split.eval_users]


def train_bpr(split: Split, cfg: BPRConfig, progress: bool = True) -> tuple[BPRMF, dict[str, float], int, float]:
    """Train on (user, item) pairs of the training sequences; early stop on validation NDCG@10."""
    seed_everything(cfg.seed)
    n_items = split.data.num_items
    users = torch.tensor([u for u, s in enumerate(split.train) for _ in s])
    items = torch.tensor([i for s in split.train for i in s])
    model = BPRMF(len(split.train), n_items, cfg.dim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    stop = EarlyStopping(cfg.patience)
    valid_inputs, valid_targets = split.inputs("valid"), split.targets("valid")
    for epoch in (bar := epochs(cfg.epochs, "bpr", progress)):
        model.train()
        for idx in torch.randperm(len(users), generator=gen).split(cfg.batch_size):
            neg = torch.randint(1, n_items + 1, (len(idx),), generator=gen)
            loss = model.loss(users[idx], items[idx], neg, cfg.reg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        item_vecs = model.item.weight.detach().numpy()[1:]
        valid = hr_ndcg(full_ranks_of(_user_rows(model, split), item_vecs, valid_inputs, valid_targets))
        bar.set_postfix(ndcg10=f"{valid['ndcg@10']:.4f}")
        if stop.update(epoch, valid["ndcg@10"], model, valid):
            break
    stop.restore(model)
    return model, stop.best_valid, stop.best_epoch, stop.seconds


def bpr_metrics(model: BPRMF, split: Split, which: str, seed: int = 0) -> dict[str, dict[str, float]]:
    from training.evaluation.evaluate import evaluate_vectors

    item_vecs = model.item.weight.detach().numpy()[1:]
    return evaluate_vectors(_user_rows(model, split), item_vecs, split.inputs(which),
                            split.targets(which), seed)
