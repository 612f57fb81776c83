"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's item sequence.

Sequences are left-padded with 0, so the last position always holds the most
recent item and its hidden state is the user vector. The item embedding table
is shared for input and scoring: score(user, item) = <h_user, E[item]>, which
is what lets serving use an inner-product FAISS index over E.

**Item tower** (with item attributes, ``cfg.attributes > 0``): an item's vector
is its ID embedding plus a projection of the mean of its attribute embeddings,
``E[i] = id[i] + W · mean(attr[a] for a in attrs(i))``. With ``id_dropout``,
each training step drops the ID part of that share of items (input and output
side alike), so the attribute part alone must be a usable vector in the same
space: a new item with no interactions gets ``W · mean(attr)``
(:meth:`SASRec.content_vectors`), which the user encoder and the index
understand. Serving never sees the tower inside the encoder:
:meth:`SASRec.frozen` bakes the final table into a plain embedding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from streamrec.sequences import Window


@dataclass
class SASRecConfig:
    num_items: int
    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    ffn_mult: int = 4
    # Share of a causal low-pass branch mixed into each block (0 = plain SASRec). A
    # BSARec-style inductive bias (Shin et al., 2024) made causal: the low-pass part is the
    # running mean of the block's input up to each position; a learned per-dimension
    # beta rescales what is left (the high-frequency part).
    lowpass: float = 0.0
    # The low-pass part: 0, the running mean (causal, with a step model); c > 0, BSARec's
    # filter, the window's lowest c frequencies (of a window max_len long), which reads the
    # whole window and so needs bidirectional attention (causal = False).
    lowpass_freqs: int = 0
    # Item tower (module docstring): the attribute vocabulary size (0 = no tower), the
    # most attributes per item, and the share of items whose ID part each step drops.
    attributes: int = 0
    max_attrs: int = 0
    id_dropout: float = 0.0
    # Where positions count from: "end" (the newest item always at max_len - 1; the
    # original recipe) or "start" (the window's first item at 0, the window anchored as
    # streamrec.sequences.window_start says). With "start" nothing already encoded moves
    # when an item is added, so serving can cache each user's keys and values and encode
    # one step per event (the exported step model).
    positions: str = "start"
    # Whether a position attends only to the items before it (the original recipe) or to
    # every item of the window. Bidirectional attention is for models trained on prefix
    # samples, which score the last position alone: an earlier position reading a later
    # item then sees nothing the last one does not. It has no step model (an added item
    # changes what every earlier position encodes), so serving encodes each window whole.
    causal: bool = True
    # Where each block's layer norms sit: "pre" (before attention and the feed-forward
    # part, residuals un-normalised, one final norm; what streamrec has always trained) or
    # "post" (after each residual sum, and once over the embedding, with no final norm:
    # the layout of BERT and of the BSARec and FMLP-Rec reference code).
    norm: str = "pre"

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {self.positions!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {self.norm!r}")
        if not isinstance(self.causal, bool):
            raise TypeError(f"causal must be true or false, not {self.causal!r}")
        if self.lowpass_freqs:
            if not self.lowpass:
                raise ValueError("lowpass_freqs shapes the low-pass branch: it needs lowpass > 0")
            if self.causal:
                raise ValueError("lowpass_freqs reads the whole window: it needs causal = false")
            if not 1 <= self.lowpass_freqs <= self.max_len // 2 + 1:
                raise ValueError(f"lowpass_freqs must be from 1 to max_len // 2 + 1 = {self.max_len // 2 + 1}, "
                                 f"not {self.lowpass_freqs}")

    def to_dict(self) -> dict[str, int | float | str]:
        return asdict(self)


POSITIONS = ("end", "start")
NORMS = ("pre", "post")


def lowpass_matrix(n: int, freqs: int) -> torch.Tensor:
    """(n, n): ``P @ x`` keeps the lowest ``freqs`` frequencies of ``x`` (n positions, along
    the first axis): ``irfft(rfft(x) * [1] * freqs + [0] * ..., n)``, written as one matrix so
    that it exports as a product and reads any window up to n long (its last rows and columns)."""
    t = torch.arange(n, dtype=torch.float64)
    k = torch.arange(freqs, dtype=torch.float64)
    weight = torch.full((freqs,), 2.0, dtype=torch.float64)
    weight[0] = 1.0  # the mean
    if n % 2 == 0 and freqs == n // 2 + 1:
        weight[-1] = 1.0  # the Nyquist frequency has no mirror
    angle = 2 * math.pi * (t[:, None, None] - t[None, :, None]) * k / n
    return ((weight * torch.cos(angle)).sum(-1) / n).to(torch.float32)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        assert cfg.dim % cfg.heads == 0, "dim must be divisible by heads"
        self.heads, self.dim = cfg.heads, cfg.dim
        self.scale = 1.0 / math.sqrt(cfg.dim // cfg.heads)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        B, L, _ = x.shape
        # python-int sizes (not traced tensors) keep the ONNX export shape-generic
        q, k, v = self.qkv(x).split(self.dim, dim=2)  # 3 x (B, L, D)
        if last_only:  # only the last query row is needed for the user vector
            q, L = q[:, -1:], 1
        q = q.reshape(B, L, self.heads, -1).transpose(1, 2)  # (B, H, Lq, Dh)
        k, v = (t.reshape(B, -1, self.heads, self.dim // self.heads).transpose(1, 2) for t in (k, v))
        att = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, Lq, L)
        # a large negative, not -inf: rows of padding would otherwise be all -inf -> NaN
        att = att.masked_fill(~mask, -1e9).softmax(dim=-1)
        y = self.drop(att) @ v  # (B, H, Lq, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, L, self.dim))


class Block(nn.Module):
    """One attention block (with the optional low-pass branch), in three steps that the
    step model (:mod:`training.models.incremental`) reuses: :meth:`attn_input`, what
    attention reads; :meth:`mix`, the residual sums around attention and the low-pass
    branch; :meth:`feed_forward`."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.post = cfg.norm == "post"
        self.ln1 = nn.LayerNorm(cfg.dim)  # pre: before attention; post: after its residual sum
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)  # pre: before the feed-forward part; post: after its sum
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_mult * cfg.dim), nn.GELU(),
                                 nn.Linear(cfg.ffn_mult * cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))
        self.drop = nn.Dropout(cfg.dropout)
        self.lowpass = cfg.lowpass
        if self.lowpass:
            self.sqrt_beta = nn.Parameter(torch.ones(cfg.dim))
        # post: the low-pass branch's own residual sum is normalised as well
        self.ln_lowpass = nn.LayerNorm(cfg.dim) if self.post and self.lowpass else None
        self.lowpass_matrix: torch.Tensor | None
        self.register_buffer("lowpass_matrix", lowpass_matrix(cfg.max_len, cfg.lowpass_freqs)
                             if cfg.lowpass and cfg.lowpass_freqs else None, persistent=False)

    def attn_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.post else self.ln1(x)

    def mix(self, x: torch.Tensor, attended: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
        """The block's input ``x``, attention's output and the low-pass part ``mean`` (or
        None) -> what the feed-forward part reads."""
        out = x + self.drop(attended)
        if self.post:
            out = self.ln1(out)
        if mean is not None:
            branch = x + self.drop(mean + self.sqrt_beta ** 2 * (x - mean))
            if self.ln_lowpass is not None:
                branch = self.ln_lowpass(branch)
            out = self.lowpass * branch + (1 - self.lowpass) * out
        return out

    def feed_forward(self, out: torch.Tensor) -> torch.Tensor:
        return self.ln2(out + self.ffn(out)) if self.post else out + self.ffn(self.ln2(out))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False,
                count: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, 1, D) for the last position only (serving).

        ``count`` (B, L, 1): real items up to each position, for the low-pass branch.
        """
        h = self.attn_input(x)
        mean = None
        if self.lowpass_matrix is not None:  # pads are zero: the window's leading pad columns add nothing
            L = x.shape[1]
            mean = self.lowpass_matrix[-L:, -L:] @ x
        elif self.lowpass:
            assert count is not None
            mean = x.cumsum(dim=1) / count.clamp(min=1)  # pads are zero: running mean of real items
        if last_only:
            x, mask = x[:, -1:], mask[:, :, -1:]
            mean = None if mean is None else mean[:, -1:]
        return self.feed_forward(self.mix(x, self.attn(h, mask, last_only), mean))


class ItemSpace(nn.Module):
    """The item side every retrieval model here shares: the item table (ID embedding, plus
    the item tower's attribute part when ``cfg.attributes``), its ID dropout, and the
    next-item losses. A subclass supplies ``hidden(seq, last_only, table)``: the user
    vector at every position (or the last), in the same space."""

    kind = "?"
    item_attrs: torch.Tensor  # [N + 1, max_attrs] int64 (item tower only), a buffer
    has_attrs: torch.Tensor  # [N + 1] bool (item tower only), a buffer
    cfg: Any

    def _init_items(self, cfg: Any, item_attrs: torch.Tensor | None) -> None:
        self.item_emb = nn.Embedding(cfg.num_items + 1, cfg.dim, padding_idx=0)
        self.attr_emb: nn.Embedding | None = None
        self.attr_proj: nn.Linear | None = None
        if cfg.attributes:
            if item_attrs is None or tuple(item_attrs.shape) != (cfg.num_items + 1, cfg.max_attrs):
                raise ValueError("an item tower needs item_attrs of shape (num_items + 1, max_attrs)")
            self.attr_emb = nn.Embedding(cfg.attributes + 1, cfg.dim, padding_idx=0)
            self.attr_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)  # no bias: no attributes -> 0
            self.register_buffer("item_attrs", item_attrs.to(torch.long), persistent=False)
            self.register_buffer("has_attrs", (item_attrs > 0).any(dim=1), persistent=False)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def hidden(self, seq: torch.Tensor, last_only: bool = False,
               table: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def window(self) -> Window:
        """The items of a history this model reads (anchored where positions count from
        the start)."""
        return Window(self.cfg.max_len, getattr(self.cfg, "positions", "end") == "start")

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) -> user vector (B, D): the hidden state at the last position."""
        return self.hidden(seq, last_only=True)[:, -1, :]

    def item_vectors(self) -> torch.Tensor:
        """(N + 1, D) item vectors (ID part + attribute part); row 0 is PAD."""
        return self.item_table(train_dropout=False)

    def content_vectors(self, attrs: torch.Tensor) -> torch.Tensor:
        """(B, A) 0-padded attribute indexes -> (B, D): the attribute part of an item's
        vector, which is all a new item (no ID embedding trained) has."""
        assert self.attr_emb is not None and self.attr_proj is not None, "no item tower"
        # the mean over real attributes (an embedding plus a mask, not EmbeddingBag: its
        # padding_idx has no ONNX export); no attributes give 0
        real = (attrs > 0).unsqueeze(-1).to(self.attr_emb.weight.dtype)  # (B, A, 1)
        mean = (self.attr_emb(attrs) * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        return self.attr_proj(mean)

    def item_table(self, train_dropout: bool = True) -> torch.Tensor:
        """The item vectors the model reads and scores with. In training with
        ``id_dropout``, a fresh share of the items with attributes lose their ID part."""
        ids = self.item_emb.weight
        if self.attr_emb is None:
            return ids
        content = self.content_vectors(self.item_attrs)
        if train_dropout and self.training and self.cfg.id_dropout > 0:
            drop = (torch.rand(len(ids), device=ids.device) < self.cfg.id_dropout) & self.has_attrs
            ids = ids * (~drop).unsqueeze(1).to(ids.dtype)
        return ids + content

    @torch.no_grad()
    def frozen(self) -> Self:
        """A copy without the tower: the final item table baked into a plain embedding
        (what the exported encoder runs; same outputs, no attribute work per call)."""
        cfg = replace(self.cfg, attributes=0, max_attrs=0, id_dropout=0.0)
        plain = type(self)(cfg)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("attr_")}
        state["item_emb.weight"] = self.item_vectors().detach().clone()
        plain.load_state_dict(state)
        return plain.eval()

    def loss(self, seq: torch.Tensor, pos: torch.Tensor, kind: str, negatives: int = 1,
             neighbours: torch.Tensor | None = None, hard: int = 0,
             mask_seen: bool = False, shown: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item loss over every non-pad position of (B, L) inputs ``seq``, targets ``pos``.

        ``ce``: full softmax over the catalogue; ``sampled``: softmax over the target and
        ``negatives`` uniform items shared by the batch (easy negatives), plus ``hard``
        per-position items drawn from ``neighbours[target]`` (items near the target in
        embedding space), accidental hits masked, plus, with ``shown`` (B, L, n: per target
        position, up to n items of the list the user held that were shown and not clicked, 0
        = none), n impression negatives and n more uniform ones per position (1:1); a slot
        with no impression negative takes a uniform item instead; ``bce``: the original SASRec recipe, one
        uniform negative per position.

        ``mask_seen`` (``ce`` only): items already in the input up to a position are left
        out of that position's softmax, as evaluation leaves the history out of the
        ranking. Otherwise every consumed item is pushed down as a negative for all the
        later positions of the same user, against the co-occurrence the model should learn.
        """
        where = pos > 0
        E = self.item_table()  # one draw of the ID dropout for the inputs and the scores
        if where[:, :-1].any():
            h = self.hidden(seq, table=E)[where]  # (M, D)
        else:  # targets in the last column only (prefix samples): the last block for it alone
            h = self.hidden(seq, last_only=True, table=E)[:, -1][where[:, -1]]
        y = pos[where]  # (M,)
        if kind == "ce":
            logits = h @ E[1:].T  # (M, N)
            if mask_seen:
                logits = logits.masked_fill(_seen_before(seq, where, y, self.cfg.num_items), -torch.inf)
            return F.cross_entropy(logits, y - 1)
        neg = torch.randint(1, self.cfg.num_items + 1, (negatives,) if kind == "sampled" else y.shape,
                            device=y.device)
        pos_logit = (h * E[y]).sum(-1)  # (M,)
        if kind == "bce":
            neg_logit = (h * E[neg]).sum(-1)
            return F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
        if kind == "sampled":
            neg_logit = h @ E[neg].T  # (M, K)
            neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == y.unsqueeze(1), -1e9)
            parts = [pos_logit.unsqueeze(1), neg_logit]
            if hard and neighbours is not None:
                cols = torch.randint(0, neighbours.shape[1], (len(y), hard), device=y.device)
                hn = neighbours[y].gather(1, cols)  # (M, hard)
                hard_logit = (h.unsqueeze(1) * E[hn]).sum(-1)  # (M, hard)
                parts.append(hard_logit.masked_fill(hn == y.unsqueeze(1), -1e9))
            if shown is not None:
                imp = shown[where]  # (M, n)
                easy = torch.randint(1, self.cfg.num_items + 1, (len(y), 2 * imp.shape[1]), device=y.device)
                mixed = torch.cat([torch.where(imp > 0, imp, easy[:, :imp.shape[1]]), easy[:, imp.shape[1]:]], 1)
                mixed_logit = (h.unsqueeze(1) * E[mixed]).sum(-1)  # (M, 2n)
                parts.append(mixed_logit.masked_fill(mixed == y.unsqueeze(1), -1e9))
            return F.cross_entropy(torch.cat(parts, dim=1), torch.zeros_like(y))
        raise ValueError(f"unknown loss {kind!r}: use ce, sampled or bce")


class SASRec(ItemSpace):
    kind = "sasrec"
    causal: torch.Tensor  # [max_len, max_len] bool, a buffer

    def __init__(self, cfg: SASRecConfig, item_attrs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self._init_items(cfg, item_attrs)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        # pre: one norm over the last block's output; post: one over the embedding
        self.ln_f = nn.LayerNorm(cfg.dim) if cfg.norm == "pre" else nn.Identity()
        self.ln_emb = nn.LayerNorm(cfg.dim) if cfg.norm == "post" else None
        causal = torch.tril(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.apply(self._init)

    def embed(self, items: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Item vectors (..., D) and their positions (...) -> the first block's input."""
        if self.ln_emb is not None:
            return self.ln_emb(items + self.pos_emb(pos))
        return items * math.sqrt(self.cfg.dim) + self.pos_emb(pos)

    def hidden(self, seq: torch.Tensor, last_only: bool = False,
               table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) int64 item indexes, left-padded, L <= max_len -> (B, L, D) hidden states.

        Positions count back from the end (the last item always has position
        max_len - 1) or, with ``positions = "start"``, up from each row's first real
        item; either way a batch may be cut to its longest real sequence: leading pad
        columns change nothing. ``last_only`` returns (B, 1, D), computing the final
        block for the last position alone.
        """
        L = seq.shape[1]
        keep = (seq > 0).unsqueeze(-1)  # (B, L, 1)
        if self.cfg.positions == "start":
            pos = (keep.squeeze(-1).to(torch.int64).cumsum(dim=1) - 1).clamp(min=0)  # (B, L); pads read 0, zeroed below
        else:
            pos = torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=seq.device)
        E = self.item_table() if table is None else table
        x = self.drop(self.embed(E[seq], pos)) * keep  # (B, L, D)
        real = (seq > 0).unsqueeze(1).unsqueeze(1)  # (B, 1, 1, L): attend to real items only
        mask = self.causal[:L, :L] & real if self.cfg.causal else real
        count = keep.to(x.dtype).cumsum(dim=1) if self.cfg.lowpass else None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            cut = last_only and i == last
            x = block(x, mask, cut, count) * (keep[:, -1:] if cut else keep)
        return self.ln_f(x)


@dataclass
class TwoTowerConfig:
    num_items: int
    max_len: int = 50
    dim: int = 64
    hidden: int = 256  # the user tower's MLP width
    dropout: float = 0.2
    # the item tower (as SASRecConfig's)
    attributes: int = 0
    max_attrs: int = 0
    id_dropout: float = 0.0

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class TwoTower(ItemSpace):
    """The seed's two-tower retrieval model. User tower: the mean of the vectors of the
    user's items so far (a bag, no order) beside the latest item's vector, through an MLP
    into the item space; no user-id embedding, so a user never seen in training is encoded
    like any other. Item tower: :class:`ItemSpace`'s table (ID + attributes). Causal by
    construction (a running mean), so like SASRec it trains on every position."""

    kind = "twotower"

    def __init__(self, cfg: TwoTowerConfig, item_attrs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self._init_items(cfg, item_attrs)
        self.mlp = nn.Sequential(nn.Linear(2 * cfg.dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.hidden, cfg.dim))
        self.norm = nn.LayerNorm(2 * cfg.dim)
        self.apply(self._init)

    def hidden(self, seq: torch.Tensor, last_only: bool = False,
               table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) left-padded item indexes -> (B, L, D) user vectors (or (B, 1, D))."""
        E = self.item_table() if table is None else table
        keep = (seq > 0).unsqueeze(-1).to(E.dtype)
        x = E[seq] * keep  # (B, L, D)
        if last_only:
            mean = x.sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp(min=1)
            x, keep = x[:, -1:], keep[:, -1:]
        else:
            mean = x.cumsum(dim=1) / keep.cumsum(dim=1).clamp(min=1)
        return self.mlp(self.norm(torch.cat([mean, x], dim=-1))) * keep


RetrievalModel = SASRec | TwoTower


def build_model(cfg: SASRecConfig | TwoTowerConfig, item_attrs: torch.Tensor | None = None,
                ) -> RetrievalModel:
    return TwoTower(cfg, item_attrs) if isinstance(cfg, TwoTowerConfig) else SASRec(cfg, item_attrs)


@torch.no_grad()
def _seen_before(seq: torch.Tensor, where: torch.Tensor, y: torch.Tensor, num_items: int) -> torch.Tensor:
    """(M, N) bool: per target position (``where``, row-major), the items in the input up
    to and including it, the target itself excepted."""
    B, L = seq.shape
    first = torch.full((B, num_items + 1), L, dtype=torch.int16, device=seq.device)
    steps = torch.arange(L, dtype=torch.int16, device=seq.device).expand(B, L)
    first.scatter_reduce_(1, seq, steps, reduce="amin")  # each item's first position per row
    rows, cols = where.nonzero(as_tuple=True)
    mask = first[rows, 1:] <= cols.to(torch.int16).unsqueeze(1)  # (M, N); column 0 is PAD
    mask[torch.arange(len(y), device=y.device), y - 1] = False
    return mask


@torch.no_grad()
def nearest_items(model: ItemSpace, k: int = 50, chunk: int = 2048) -> torch.Tensor:
    """(N + 1, k) item indexes nearest to each item by inner product (row 0 unused)."""
    E = model.item_vectors()[1:]  # (N, D)
    out = torch.zeros((E.shape[0] + 1, k), dtype=torch.long, device=E.device)
    for lo in range(0, E.shape[0], chunk):
        sims = E[lo:lo + chunk] @ E.T  # (c, N)
        rows = torch.arange(len(sims), device=E.device)
        sims[rows, rows + lo] = -torch.inf  # by inner product an item need not be its own nearest
        out[lo + 1:lo + 1 + len(sims)] = sims.topk(k, dim=1).indices + 1
    return out
