"""The training loop of the sequence models (SASRec, two-tower): next-item loss at every position, early stopping on validation NDCG@10."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from streamrec.sequences import Window, left_pad, window_start
from training.data.sequences import Split
from training.distributed import Distributed
from training.evaluation.evaluate import BATCH, encode_all, evaluate_full, full_ranks_of
from training.evaluation.ranking_metrics import hr_ndcg
from training.models.averaging import WeightAverage
from training.models.early_stop import EarlyStopping
from training.models.progress import epochs
from training.models.retrieval import (
    RetrievalModel,
    SASRecConfig,
    TwoTowerConfig,
    build_model,
    nearest_items,
)


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "ce"  # ce | sampled | bce
    negatives: int = 256  # for loss="sampled": uniform negatives shared by a batch
    hard_negatives: int = 0  # for loss="sampled": per position, from the target's nearest items
    # for loss="sampled": per position, up to this many items shown to the user and not
    # clicked (impressions), mixed 1:1 with as many uniform ones; 0 = off
    impression_negatives: int = 0
    patience: int = 10  # epochs without validation improvement before stopping
    max_minutes: float | None = None  # wall-clock budget
    # Final fit: after early stopping picks the epoch count on validation, retrain from
    # scratch on everything but the test item (the validation item is part of the test
    # input anyway) for that many epochs. Test metrics then come from the refit model.
    refit: bool = False
    # loss="ce": leave the items already in the input out of each position's softmax
    # (evaluation masks the history too; see SASRec.loss)
    mask_seen: bool = False
    # Training samples: "positions", each user's sequence once (its last max_len items),
    # the loss at every position; "windows", the same, with a sequence longer than max_len
    # cut into consecutive windows of max_len targets, so every item is a target once;
    # "prefixes", every prefix of every sequence a sample of its own (the last max_len
    # items before the target, right-aligned), the loss at its last position only. With
    # prefixes the model trains on exactly the inputs it serves (the newest item always in
    # the last position, positions counted from there), and a sequence longer than max_len
    # contributes every window, not only its last.
    samples: str = "positions"
    # An exponential moving average of the weights, updated after every optimiser step
    # with this decay (0 = off): validation, early stopping and the exported model read
    # the average, the optimiser steps the weights (training.models.averaging).
    ema: float = 0.0
    # Learning rate on a plateau: after this many epochs without a better validation
    # score, and again after as many more, the learning rate is multiplied by
    # ``lr_factor`` (0 = off). A refit replays the selection's rates epoch by epoch.
    lr_plateau: int = 0
    lr_factor: float = 0.5
    seed: int = 42
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: RetrievalModel
    best_epoch: int
    epochs_run: int
    seconds: float
    valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


SAMPLES = ("positions", "windows", "prefixes")


def plateau_cut(epoch: int, best_epoch: int, every: int) -> bool:
    """Whether the learning rate is cut after ``epoch``: ``every`` epochs after the best
    one, and every ``every`` epochs after that (``every`` = 0: never)."""
    since = epoch - best_epoch
    return every > 0 and since > 0 and since % every == 0


def anchored_rows(seq: Sequence[int], max_len: int) -> list[tuple[int, int, int]]:
    """The rows of one sequence for an anchored encoder: ``(a, first, last)`` per window
    start ``a`` (:func:`~streamrec.sequences.window_start`), its inputs ``seq[a:last]`` and
    its targets the items at ``first..last``: each target once, read from the window
    serving reads for it."""
    rows: list[tuple[int, int, int]] = []
    for t in range(1, len(seq)):  # target seq[t], history seq[:t]
        a = window_start(t, max_len)
        if rows and rows[-1][0] == a:
            rows[-1] = (a, rows[-1][1], t)
        else:
            rows.append((a, t, t))
    return rows


def training_pairs(seqs: list[list[int]], max_len: int, samples: str = "positions",
                   anchored: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), left-padded to ``max_len``, target 0 = no loss there.

    ``positions``: per user, inputs s[:-1] and next-item targets s[1:], the last ``max_len``
    of each. ``windows``: the same for each window of up to ``max_len`` targets, cut from the
    end (a window's first input is the previous window's last target). ``prefixes``: per user and position j >= 1, inputs s[:j] (its last ``max_len``)
    and the target s[j] in the last column only (:attr:`TrainConfig.samples`).

    ``anchored`` (an encoder whose positions count from the window's start): every input
    is the window serving reads (:class:`~streamrec.sequences.Window`); ``positions`` and
    ``windows`` both give each target once, one row per window start
    (:func:`anchored_rows`), and ``prefixes`` one row per target.
    """
    if samples not in SAMPLES:
        raise ValueError(f"samples must be one of {SAMPLES}, not {samples!r}")
    usable = [s for s in seqs if len(s) >= 2]
    start = Window(max_len, anchored).start  # where the window read for a history of j items begins
    if samples == "prefixes":
        inputs = left_pad([s[start(j):j] for s in usable for j in range(1, len(s))], max_len)
        targets = np.zeros_like(inputs)
        targets[:, -1] = [s[j] for s in usable for j in range(1, len(s))]
        return torch.from_numpy(inputs), torch.from_numpy(targets)
    if anchored:
        rows = [(s, a, first, last) for s in usable for a, first, last in anchored_rows(s, max_len)]
        inputs = left_pad([s[a:last] for s, a, _, last in rows], max_len)
        targets = left_pad([[0] * (first - a - 1) + s[first:last + 1] for s, a, first, last in rows],
                           max_len)
        return torch.from_numpy(inputs), torch.from_numpy(targets)
    if samples == "windows":
        usable = [s[max(0, end - max_len - 1):end] for s in usable
                  for end in range(len(s), 1, -max_len)]
    inputs = left_pad([s[:-1] for s in usable], max_len)
    targets = left_pad([s[1:] for s in usable], max_len)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def shown_tensor(seqs: list[list[int]], negs: list[list[list[int]]], max_len: int, n: int,
                 anchored: bool = False) -> torch.Tensor:
    """(rows, max_len, n) impression negatives aligned with :func:`training_pairs`' targets
    (``positions`` samples): ``negs[u][j]`` are position j's (of the user's full sequence,
    of which ``seqs[u]`` is a prefix), cut to ``n``, 0-padded."""
    usable = [(s, ng) for s, ng in zip(seqs, negs, strict=True) if len(s) >= 2]
    spans = [(ng, a, last) for s, ng in usable for a, _, last in anchored_rows(s, max_len)] if anchored \
        else [(ng, 0, len(s) - 1) for s, ng in usable]
    out = torch.zeros((len(spans), max_len, n), dtype=torch.long)
    for r, (ng, a, last) in enumerate(spans):
        rows = [ng[j] if j < len(ng) else [] for j in range(a + 1, last + 1)][-max_len:]
        off = max_len - len(rows)
        for k, row in enumerate(rows):
            if row:
                out[r, off + k, :min(n, len(row))] = torch.tensor(row[:n])
    return out


def length_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of users with similar lengths, so a batch can be cut to its longest.

    Users are shuffled, sorted by length within chunks of 32 batches, split, and the
    batch order is shuffled again: nearly the randomness of plain shuffling, with
    far less padding (leading pad columns change nothing, so cutting is exact).
    """
    perm = torch.randperm(len(lengths), generator=gen)
    out: list[torch.Tensor] = []
    for chunk in perm.split(batch_size * 32):
        out.extend(chunk[torch.argsort(lengths[chunk], stable=True)].split(batch_size))
    return [out[i] for i in torch.randperm(len(out), generator=gen)]


def torch_encode(model: RetrievalModel) -> Any:
    """An ``EncodeFn`` over the torch model (eval mode, no grad), on the model's device."""
    def encode(seqs: np.ndarray) -> np.ndarray:
        device = model.item_emb.weight.device
        with torch.no_grad():
            return model(torch.from_numpy(seqs).to(device)).cpu().numpy()
    return encode


def evaluate_model(model: RetrievalModel, split: Split, which: str,
                   ctx: Distributed | None = None) -> dict[str, float]:
    """Full-ranking HR/NDCG on ``which``. With ``ctx``, each rank scores its share of the
    users (whole batches of the single-process evaluation) and the ranks are gathered: the
    same numbers on every rank as one process gets."""
    model.eval()
    items = model.item_vectors()[1:].detach().cpu().numpy()
    inputs, targets = split.inputs(which), split.targets(which)
    if ctx is None or ctx.world_size == 1:
        return evaluate_full(torch_encode(model), items, inputs, targets, model.window)
    lo, hi = ctx.shard(len(inputs), BATCH)
    mine = inputs[lo:hi]
    ranks = (full_ranks_of(encode_all(torch_encode(model), mine, model.window), items, mine,
                           targets[lo:hi]) if hi > lo else np.empty(0, dtype=np.int64))
    return hr_ndcg(ctx.gather_rows(ranks, len(inputs), BATCH))


class _Loss(nn.Module):
    """The model's training loss as a ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> torch.Tensor:
        return self.model.loss(*args)


def train_sasrec(split: Split, mcfg: SASRecConfig | TwoTowerConfig, cfg: TrainConfig, progress: bool = True,
                 item_attrs: torch.Tensor | None = None,
                 negatives: list[list[list[int]]] | None = None,
                 ctx: Distributed | None = None, device: torch.device | None = None) -> TrainResult:
    """Train SASRec, or the two-tower model for a :class:`TwoTowerConfig` (with an item tower
    when ``mcfg.attributes`` and ``item_attrs`` are given). ``negatives``: per user and
    position of the full sequence, impression negatives (used with
    ``cfg.impression_negatives`` and the sampled loss). ``ctx``: data-parallel over the
    ranks of a process group (:mod:`training.distributed`); ``device``: where to train (default
    the CPU, or ``ctx``'s). The model comes back on the CPU either way."""
    result = _fit(split, split.train, mcfg, cfg, progress, select=True, item_attrs=item_attrs,
                  negatives=negatives, ctx=ctx, device=device)
    if not cfg.refit:
        return result
    return refit_sasrec(split, result, mcfg, cfg, progress, item_attrs, negatives, ctx, device)


def refit_sasrec(split: Split, selected: TrainResult, mcfg: SASRecConfig | TwoTowerConfig,
                 cfg: TrainConfig, progress: bool = True, item_attrs: torch.Tensor | None = None,
                 negatives: list[list[list[int]]] | None = None, ctx: Distributed | None = None,
                 device: torch.device | None = None) -> TrainResult:
    """The refit after ``selected`` (a run without one): a fresh model trained on everything
    but the test items for the ``selected.best_epoch`` epochs validation chose. Its
    result carries the selection's epoch, validation figures, time and history too."""
    seqs = list(split.train)
    for u, v in zip(split.eval_users, split.valid_target, strict=True):
        seqs[u] = split.train[u] + [int(v)]
    again = replace(cfg, epochs=selected.best_epoch, patience=selected.best_epoch + 1, max_minutes=None)
    rates = [h.get("lr", cfg.lr) for h in selected.history[:selected.best_epoch]]
    refit = _fit(split, seqs, mcfg, again, progress, select=False, item_attrs=item_attrs,
                 negatives=negatives, ctx=ctx, device=device, rates=rates)
    return TrainResult(refit.model, selected.best_epoch, selected.epochs_run + refit.epochs_run,
                       selected.seconds + refit.seconds, selected.valid,
                       selected.history + refit.history)


def _fit(split: Split, seqs: list[list[int]], mcfg: SASRecConfig | TwoTowerConfig, cfg: TrainConfig, progress: bool,
         select: bool, item_attrs: torch.Tensor | None = None,
         negatives: list[list[list[int]]] | None = None, ctx: Distributed | None = None,
         device: torch.device | None = None, rates: list[float] | None = None) -> TrainResult:
    """Train on ``seqs``; with ``select``, keep the epoch with the best validation NDCG@10.
    With ``ctx``, each rank trains on its piece of every batch and DDP averages the
    gradients; the stopping decision is rank 0's. ``rates``: the learning rate of each
    epoch (a refit's replay of its selection's plateau cuts); otherwise ``cfg.lr``, cut
    on plateaus when ``cfg.lr_plateau`` is set."""
    if not getattr(mcfg, "causal", True) and cfg.samples != "prefixes":
        raise ValueError(f"bidirectional attention needs prefix samples, not {cfg.samples!r}: "
                         "a position would read the items it must predict")
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = device or (ctx.device if ctx is not None else torch.device("cpu"))
    model = build_model(mcfg, item_attrs).to(device)
    step: nn.Module = _Loss(model)
    if ctx is not None:
        # the same initial weights everywhere (DDP broadcasts rank 0's); then each rank
        # draws its own dropout masks and negatives
        step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(cfg.seed + 1000 * ctx.rank)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    anchored = model.window.anchored
    inputs, targets = training_pairs(seqs, mcfg.max_len, cfg.samples, anchored)
    lengths = (inputs > 0).sum(dim=1)  # a batch is cut to its longest input
    inputs, targets = inputs.to(device), targets.to(device)
    use_shown = cfg.loss == "sampled" and cfg.impression_negatives > 0 and negatives is not None
    shown = (shown_tensor(seqs, negatives, mcfg.max_len, cfg.impression_negatives, anchored).to(device)
             if use_shown and negatives is not None else None)
    # the batch order: the same draw on every rank
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    # The refit trains on the validation items (no honest validation): every epoch is
    # "best" (score = epoch) and it runs its fixed number of epochs.
    stop = EarlyStopping(cfg.patience if select else cfg.epochs + 1,
                         cfg.max_minutes if select else None)
    start = time.monotonic()
    bar = epochs(cfg.epochs, model.kind if select else "refit", progress)
    rate = cfg.lr

    def shown_rate(r: float) -> dict[str, str]:  # the progress line names the rate where it moves
        return {"lr": f"{r:.3g}"} if cfg.lr_plateau else {}

    for epoch in bar:
        if rates:
            rate = rates[min(epoch, len(rates)) - 1]
        for group in opt.param_groups:
            group["lr"] = rate
        model.train()
        total, n = 0.0, 0
        # hard negatives come from the current embeddings, refreshed once per epoch
        neighbours = nearest_items(model) if cfg.loss == "sampled" and cfg.hard_negatives else None
        for batch in length_batches(lengths, cfg.batch_size, gen):
            if ctx is not None:
                if len(batch) < ctx.world_size:  # a piece for every rank, or no step at all
                    continue
                batch = ctx.split_batch(batch)
            width = int(lengths[batch].max())
            idx = batch.to(device)
            loss = step(inputs[idx, -width:], targets[idx, -width:], cfg.loss, cfg.negatives,
                        neighbours, cfg.hard_negatives, cfg.mask_seen,
                        None if shown is None else shown[idx, -width:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update()
            total, n = total + loss.item(), n + 1
        with average.applied() if average is not None else nullcontext():
            if not select:
                history.append({"epoch": epoch, "loss": total / max(n, 1), "lr": rate,
                                "seconds": time.monotonic() - start})
                bar.set_postfix(loss=f"{total / max(n, 1):.4f}", **shown_rate(rate))
                stop.update(epoch, float(epoch), model)
                continue
            valid = evaluate_model(model, split, "valid", ctx)
            history.append({"epoch": epoch, "loss": total / max(n, 1), "lr": rate, **valid,
                            "seconds": time.monotonic() - start})
            bar.set_postfix(loss=f"{total / max(n, 1):.4f}", ndcg10=f"{valid['ndcg@10']:.4f}", **shown_rate(rate))
            done = stop.update(epoch, valid["ndcg@10"], model)
        if ctx is not None:  # the time budget runs out at different moments on each rank
            done = ctx.broadcast_flag(done)
        if done:
            break
        if select and cfg.lr_plateau:
            cut = plateau_cut(epoch, stop.best_epoch, cfg.lr_plateau)
            if ctx is not None:  # every rank steps with rank 0's rate
                cut = ctx.broadcast_flag(cut)
            if cut:
                rate *= cfg.lr_factor
    stop.restore(model)
    model.eval().cpu()
    best_epoch = stop.best_epoch
    return TrainResult(model, best_epoch, len(history), time.monotonic() - start,
                       history[best_epoch - 1], history)
