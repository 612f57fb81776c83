"""The ranking stage's model: trained on retrieval's candidates, never on test targets.

**How the data is split.** The retrieval model trains on each user's sequence
without its last two items (the leave-one-out train split; no refit). The
ranker then learns from retrieval's top ``K`` candidates for the *validation*
position: input = the training sequence, positive = the validation item when
retrieval put it in the top ``K`` (a listwise softmax over the ``K``
candidates), which is an item the retrieval model never trained on. A seeded
tenth of the users is held out of the ranker's training to pick its epoch
(validation NDCG@10 of the whole funnel). Test targets are used only to
report.

**The model** (Neural CF, He et al. 2017, with the side features of
:mod:`serving.ranking`): an MLP over ``[u ⊙ v, u, v, standardized features]``
whose output is added to the retrieval score; its last layer starts at zero,
so before training it keeps retrieval's order exactly.

**Evaluation** (:func:`funnel_ranks`): the funnel's order over the whole
catalogue is the ranker's order of the top ``K``, then every other item in
retrieval order. Full and sampled protocols both read that order, so
retrieval alone and retrieval + ranking are compared by the same code.

**On by default only where it measurably wins**: the bundle records whether the
ranker beat retrieval alone on the held-out validation users
(``metrics.ranker.enabled``); the worker follows that unless told otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from serving.ranking import (
    FEATS,
    FEATURES,
    ITEMS,
    SCORES,
    USER,
    attribute_overlap,
    candidate_features,
    matches_reference,
    profiles_of,
)
from serving.topk import top_k_rows
from streamrec.errors import ExportError
from training.evaluation.evaluate import masked_scores, sampled_candidates
from training.evaluation.ranking_metrics import hr_ndcg, ranks_from_scores

BATCH = 1024
BIG = 1e9  # funnel keys: candidates above every retrieval score


@dataclass(frozen=True)
class RankerConfig:
    # 100 x 64: as good as 200 candidates or a 128-wide layer on Beauty's held-out validation
    # users (0.0689 vs 0.0684 / 0.0689), at a quarter of the serving cost
    candidates: int = 100
    hidden: int = 64
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 3
    holdout: float = 0.1  # share of users that pick the epoch
    seed: int = 42


class NCFRanker(nn.Module):
    mean: torch.Tensor  # [F] feature standardization, buffers
    std: torch.Tensor

    def __init__(self, dim: int, hidden: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp(min=1e-6))
        self.mlp = nn.Sequential(nn.Linear(3 * dim + len(FEATURES), hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1))
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, user: torch.Tensor, items: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """user [B, D], items [B, K, D], feats [B, K, F] -> scores [B, K]."""
        u = user.unsqueeze(1).expand_as(items)
        x = torch.cat([u * items, u, items, (feats - self.mean) / self.std], dim=-1)
        return feats[..., 0] + self.mlp(x).squeeze(-1)


class ServingRanker(nn.Module):
    """:class:`NCFRanker`'s function arranged for inference (what ``ranker.onnx`` holds).

    The first layer's product with ``[u ⊙ v, u, v, f]`` is split by input: the ``u ⊙ v``
    and ``v`` parts are one matrix per user, ``(diag(u) W_uv + W_v)``, applied to each
    candidate's ``v``; the ``u`` part is computed once per user, not once per candidate;
    the features' standardisation is folded into their weights and the bias. Per candidate
    that is ``D·H`` multiplies instead of ``(3D + F)·H``, and no ``[B, K, 3D + F]`` input is
    built. Measured (256 users x 100 candidates, D = H = 64, one thread): ONNX Runtime
    16.3 ms per batch for the plain graph, 7.7–8.6 ms for this one.
    """

    w_uv: torch.Tensor  # buffers
    w_u: torch.Tensor
    w_v: torch.Tensor
    w_f: torch.Tensor
    bias: torch.Tensor

    def __init__(self, model: NCFRanker) -> None:
        super().__init__()
        first = model.mlp[0]
        assert isinstance(first, nn.Linear)
        w, b = first.weight.detach(), first.bias.detach()  # [H, 3D + F], [H]
        d = (w.shape[1] - len(FEATURES)) // 3
        w_f = w[:, 3 * d:] / model.std  # [H, F]
        self.register_buffer("w_uv", w[:, :d].T.contiguous())  # [D, H]
        self.register_buffer("w_u", w[:, d:2 * d].T.contiguous())
        self.register_buffer("w_v", w[:, 2 * d:3 * d].T.contiguous())
        self.register_buffer("w_f", w_f.T.contiguous())  # [F, H]
        self.register_buffer("bias", b - (model.mean * w_f).sum(-1))
        self.rest = model.mlp[1:]

    def forward(self, user: torch.Tensor, items: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """The same signature and scores as :meth:`NCFRanker.forward`."""
        per_user = user.unsqueeze(-1) * self.w_uv + self.w_v  # [B, D, H]
        h = torch.matmul(items, per_user) + (user @ self.w_u + self.bias).unsqueeze(1) + feats @ self.w_f
        return feats[..., 0] + self.rest(h).squeeze(-1)


@dataclass
class Candidates:
    """Retrieval's top ``K`` per user, with what the ranker reads."""

    users: np.ndarray  # [U, D] user vectors
    idx: np.ndarray  # [U, K] item indexes (1..N), retrieval order
    scores: np.ndarray  # [U, K] retrieval scores
    feats: np.ndarray  # [U, K, F]
    retrieval_rank: np.ndarray  # [U] the target's retrieval rank (0-based, pessimistic)


def retrieve(users: np.ndarray, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
             targets: np.ndarray, k: int, log_pop: np.ndarray, item_attrs: np.ndarray,
             num_attrs: int) -> Candidates:
    """Top ``k`` unseen items per user by inner product, and their ranker features."""
    k = min(k, len(item_vecs))
    idx = np.zeros((len(users), k), dtype=np.int64)
    scores = np.full((len(users), k), -np.inf, dtype=np.float32)
    feats = np.zeros((len(users), k, len(FEATURES)), dtype=np.float32)
    ranks = np.empty(len(users), dtype=np.int64)
    for lo, hi, s in masked_scores(users, item_vecs, inputs):
        ranks[lo:hi] = ranks_from_scores(s, targets[lo:hi])
        top, idx_scores = top_k_rows(s, k)
        idx[lo:hi], scores[lo:hi] = top, idx_scores
        prof = profiles_of(inputs[lo:hi], item_attrs, num_attrs)
        overlap = attribute_overlap(prof, item_attrs[top])
        feats[lo:hi] = candidate_features(scores[lo:hi], log_pop[top], overlap)
    idx[~np.isfinite(scores)] = 0
    return Candidates(users.astype(np.float32), idx, scores, feats, ranks)


def funnel_ranks(c: Candidates, targets: np.ndarray, ranker_scores: np.ndarray | None) -> np.ndarray:
    """Full-protocol 0-based rank of each target under the funnel: its position in the
    ranker's order when retrieved (pessimistic ties), else its retrieval rank."""
    if ranker_scores is None:
        return c.retrieval_rank.copy()
    hit = c.idx == targets[:, None]
    found = hit.any(axis=1)
    t = ranker_scores[np.arange(len(targets)), hit.argmax(axis=1)]
    higher = (ranker_scores > t[:, None]).sum(axis=1)
    ties = (ranker_scores == t[:, None]).sum(axis=1) - 1
    return np.where(found, higher + ties, np.maximum(c.retrieval_rank, c.idx.shape[1]))


def sampled_funnel_ranks(c: Candidates, item_vecs: np.ndarray, inputs: Sequence[Sequence[int]],
                         targets: np.ndarray, ranker_scores: np.ndarray | None, seed: int = 0,
                         ) -> np.ndarray:
    """Sampled-protocol ranks (target among 100 unseen uniform items, seed ``seed``) under
    the funnel's order: retrieved items first, in the ranker's order, then the rest by
    retrieval score."""
    cands = sampled_candidates(inputs, targets, item_vecs.shape[0], seed)
    retrieval = np.einsum("bd,bkd->bk", c.users, item_vecs[np.maximum(cands, 1) - 1])
    key = retrieval.astype(np.float64)
    order = ranker_scores if ranker_scores is not None else c.scores
    pos = np.argsort(np.argsort(-order, axis=1, kind="stable"), axis=1)  # funnel position
    for r in range(len(cands)):
        where = {int(i): p for p, i in enumerate(c.idx[r]) if i}
        for j, item in enumerate(cands[r]):
            if (p := where.get(int(item))) is not None:
                key[r, j] = BIG - pos[r, p]
    key[cands == 0] = -np.inf
    return ranks_from_scores(key, np.zeros(len(targets), dtype=np.int64))


def score_all(model: NCFRanker, c: Candidates, table: torch.Tensor, rows: np.ndarray | None = None,
              ) -> np.ndarray:
    """Ranker scores [U, K] (-inf at padding) for the users ``rows`` (default all)."""
    rows = np.arange(len(c.idx)) if rows is None else rows
    out = np.empty((len(rows), c.idx.shape[1]), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(rows), BATCH):
            r = rows[lo:lo + BATCH]
            out[lo:lo + len(r)] = model(torch.from_numpy(c.users[r]), table[torch.from_numpy(c.idx[r])],
                                        torch.from_numpy(c.feats[r])).numpy()
    return np.where(np.isfinite(c.scores[rows]), out, -np.inf)


def _subset(c: Candidates, rows: np.ndarray) -> Candidates:
    return Candidates(c.users[rows], c.idx[rows], c.scores[rows], c.feats[rows], c.retrieval_rank[rows])


@dataclass
class RankerResult:
    model: NCFRanker
    best_epoch: int
    seconds: float
    holdout: dict[str, dict[str, float]]  # {"retrieval": …, "ranker": …} on held-out valid users
    history: list[dict[str, float]]

    @property
    def enabled(self) -> bool:
        """On by default only where it beat retrieval on the held-out validation users."""
        return self.holdout["ranker"]["ndcg@10"] > self.holdout["retrieval"]["ndcg@10"]


def train_ranker(c: Candidates, targets: np.ndarray, item_vecs: np.ndarray, cfg: RankerConfig,
                 log: Callable[[str], None] | None = None) -> RankerResult:
    """Train on the users whose target retrieval found; pick the epoch on held-out users."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    held = rng.random(len(targets)) < cfg.holdout
    hit = c.idx == targets[:, None]
    train_rows = np.flatnonzero(~held & hit.any(axis=1))
    held_rows = np.flatnonzero(held)
    label = hit.argmax(axis=1)
    table = torch.from_numpy(np.vstack([np.zeros((1, item_vecs.shape[1]), np.float32), item_vecs]))
    real = np.isfinite(c.scores[train_rows])
    flat = c.feats[train_rows][real]
    model = NCFRanker(item_vecs.shape[1], cfg.hidden, torch.from_numpy(flat.mean(0)),
                      torch.from_numpy(flat.std(0)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    held_c = _subset(c, held_rows)
    base = hr_ndcg(funnel_ranks(held_c, targets[held_rows], None))
    best, best_epoch, best_state, history = -1.0, 0, None, []
    start = time.monotonic()
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for b in torch.randperm(len(train_rows), generator=gen).split(cfg.batch_size):
            r = train_rows[b.numpy()]
            logits = model(torch.from_numpy(c.users[r]), table[torch.from_numpy(c.idx[r])],
                           torch.from_numpy(c.feats[r]))
            logits = logits.masked_fill(torch.from_numpy(~np.isfinite(c.scores[r])), -1e9)
            loss = F.cross_entropy(logits, torch.from_numpy(label[r]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(r)
        got = hr_ndcg(funnel_ranks(held_c, targets[held_rows], score_all(model, c, table, held_rows)))
        history.append({"epoch": epoch, "loss": total / max(len(train_rows), 1), **got})
        if log:
            log(f"ranker epoch {epoch}: loss {history[-1]['loss']:.4f}, held-out NDCG@10 "
                f"{got['ndcg@10']:.4f} (retrieval {base['ndcg@10']:.4f})")
        if got["ndcg@10"] > best:
            best, best_epoch = got["ndcg@10"], epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return RankerResult(model, best_epoch, time.monotonic() - start,
                        {"retrieval": base, "ranker": history[best_epoch - 1]}, history)


def compare(c: Candidates, model: NCFRanker | None, item_vecs: np.ndarray,
            inputs: Sequence[Sequence[int]], targets: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Retrieval alone and retrieval + ranking, both protocols, on the same candidates."""
    table = torch.from_numpy(np.vstack([np.zeros((1, item_vecs.shape[1]), np.float32), item_vecs]))
    out: dict[str, Any] = {}
    for name, scores in (("retrieval", None),
                         ("retrieval+ranking", None if model is None else score_all(model, c, table))):
        if name != "retrieval" and model is None:
            continue
        out[name] = {"full": hr_ndcg(funnel_ranks(c, targets, scores)),
                     "sampled": hr_ndcg(sampled_funnel_ranks(c, item_vecs, inputs, targets, scores,
                                                             seed))}
    return out


def write_ranker(fitted: FittedRanker, directory: Path, item_vecs: np.ndarray) -> dict[str, Any]:
    """``ranker.onnx`` and ``ranker.npz`` into a bundle directory; returns the manifest's
    ``metrics.ranker``."""
    sample = export_ranker(fitted.result.model, directory / "ranker.onnx", fitted.candidates, item_vecs)
    arrays = {"log_pop": fitted.log_pop.astype(np.float32),
              "item_attrs": fitted.item_attrs.astype(np.int64),
              "tokens": np.asarray(fitted.tokens, dtype=str), **sample}
    np.savez(directory / "ranker.npz", **arrays)  # type: ignore[arg-type]
    return fitted.report()


def export_ranker(model: NCFRanker, path: Path, c: Candidates, item_vecs: np.ndarray,
                  ) -> dict[str, np.ndarray]:
    """Write ``ranker.onnx``; check ONNX Runtime against torch on real candidates and return
    the warm-up sample (``user``, ``items``, ``feats``, ``scores``) for ``ranker.npz``."""
    import onnxruntime as ort


    model.eval()
    n = min(8, len(c.idx))
    users = torch.from_numpy(c.users[:n])
    items = torch.from_numpy(item_vecs[np.maximum(c.idx[:n], 1) - 1].astype(np.float32))
    feats = torch.from_numpy(c.feats[:n])
    torch.onnx.export(ServingRanker(model).eval(), (users, items, feats), str(path),
                      input_names=[USER, ITEMS, FEATS],
                      output_names=[SCORES],
                      dynamic_axes={USER: {0: "batch"}, ITEMS: {0: "batch", 1: "k"},
                                    FEATS: {0: "batch", 1: "k"}, SCORES: {0: "batch", 1: "k"}},
                      opset_version=17, dynamo=False)
    with torch.no_grad():
        ref = model(users, items, feats).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {USER: users.numpy(), ITEMS: items.numpy(), FEATS: feats.numpy()})[0]
    if not matches_reference(got, ref):
        raise ExportError("ranker: ONNX Runtime and torch disagree: max abs diff "
                          f"{float(np.abs(ref - got).max()):.3e}")
    return {"user": users.numpy(), "items": items.numpy(), "feats": feats.numpy(), "scores": got}


@dataclass
class FittedRanker:
    result: RankerResult
    test: dict[str, Any]  # compare(): retrieval vs retrieval + ranking, test split
    sample: dict[str, np.ndarray]  # warm-up inputs and reference outputs (after export)
    log_pop: np.ndarray  # [N + 1]
    candidates: Candidates  # the validation position's (for export)
    item_attrs: np.ndarray  # [N + 1, A] attribute indexes into ``tokens``
    tokens: list[str]

    def report(self) -> dict[str, Any]:
        r = self.result
        return {"model": "ncf", "features": list(FEATURES), "candidates": self.candidates.idx.shape[1],
                "hidden": r.model.hidden, "best_epoch": r.best_epoch,
                "train_seconds": round(r.seconds, 1), "enabled": r.enabled,
                "holdout_valid": r.holdout, "test": self.test,
                "split": "retrieval trained on the train split; ranker trained on retrieval's "
                         "candidates for the validation item, its epoch picked on held-out "
                         "users; test targets only reported"}


def fit_ranker(encode_users: Callable[[Sequence[Sequence[int]]], np.ndarray], item_vecs: np.ndarray,
               valid_inputs: Sequence[Sequence[int]], valid_targets: np.ndarray,
               test_inputs: Sequence[Sequence[int]], test_targets: np.ndarray, counts: np.ndarray,
               item_attrs: np.ndarray, tokens: Sequence[str], cfg: RankerConfig,
               log: Callable[[str], None] | None = None) -> FittedRanker:
    """Candidates for the validation position -> train -> compare on the test position."""
    num_attrs = len(tokens)
    log_pop = np.log1p(counts.astype(np.float32))
    log_pop[0] = 0.0
    valid = retrieve(encode_users(valid_inputs), item_vecs, valid_inputs, valid_targets,
                     cfg.candidates, log_pop, item_attrs, num_attrs)
    result = train_ranker(valid, valid_targets, item_vecs, cfg, log)
    test = retrieve(encode_users(test_inputs), item_vecs, test_inputs, test_targets, cfg.candidates,
                    log_pop, item_attrs, num_attrs)
    return FittedRanker(result, compare(test, result.model, item_vecs, test_inputs, test_targets),
                        {}, log_pop, valid, item_attrs, list(tokens))
