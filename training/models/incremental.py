"""SASRec one step at a time: the computation behind the exported step model.

With positions counted from the window's first item (``SASRecConfig.positions =
"start"``), the causal encoder's keys and values at a position never change once
computed, and the low-pass branch needs only the running sum of each block's input.
So a user's encoder state is, per block, the keys and values of the items so far
and that sum; one new item costs one query against them, not a pass over the
window.

* :func:`prefill`: a left-padded window in, its user vector and state out;
* :func:`step`: one new item and the state so far in, the user vector and the
  new item's part of the state out.

Both compute what :meth:`SASRec.hidden` computes at the last position (eval mode;
``tests/unit/training/test_incremental.py`` holds them to it), and both export to
ONNX (:mod:`training.export.bundle`), where serving
(:mod:`serving.step_encoder`) keeps the state per user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from training.models.retrieval import Block, SASRec

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # keys, values, sums


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, Dh)."""
    B, L, D = t.shape
    return t.reshape(B, L, heads, D // heads).transpose(1, 2)


def _blocks(model: SASRec) -> list[Block]:
    return cast(list[Block], list(model.blocks))


def prefill(model: SASRec, seq: torch.Tensor) -> tuple[torch.Tensor, State]:
    """(B, L) left-padded item indexes -> user vectors (B, D) and the state: keys and
    values (layers, B, H, L, Dh) at every column (pads' are never attended to) and each
    block's input summed over the real items (layers, B, D)."""
    cfg = model.cfg
    keep = (seq > 0).unsqueeze(-1)
    pos = (keep.squeeze(-1).to(torch.int64).cumsum(dim=1) - 1).clamp(min=0)
    x = model.embed(model.item_emb(seq), pos) * keep
    L = seq.shape[1]
    mask = model.causal[:L, :L] & (seq > 0).unsqueeze(1).unsqueeze(1)  # (B, 1, L, L)
    count = keep.to(x.dtype).cumsum(dim=1).clamp(min=1)
    keys, values, sums = [], [], []
    for i, block in enumerate(_blocks(model)):
        attn = block.attn
        q, k, v = (_heads(t, cfg.heads) for t in attn.qkv(block.attn_input(x)).split(cfg.dim, dim=2))
        att = ((q @ k.transpose(-2, -1)) * attn.scale).masked_fill(~mask, -1e9).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(x.shape)
        out = block.mix(x, attn.proj(y), x.cumsum(dim=1) / count if cfg.lowpass else None)
        keys.append(k)
        values.append(v)
        sums.append(x.sum(dim=1))
        x = block.feed_forward(out) * keep
    return model.ln_f(x[:, -1]), (torch.stack(keys), torch.stack(values), torch.stack(sums))


def step(model: SASRec, item: torch.Tensor, pos: torch.Tensor, keys: Sequence[torch.Tensor],
         values: Sequence[torch.Tensor], past: torch.Tensor, sums: torch.Tensor,
         count: torch.Tensor) -> tuple[torch.Tensor, State]:
    """One new item per user. ``item``, ``pos`` (B,): the item and its position (the
    number of items before it in the window); ``keys``, ``values``: per block (B, H, T, Dh)
    (a stacked (layers, B, H, T, Dh) tensor indexes the same), and ``past`` (B, T) bool: the state so far, left-padded, ``past`` False on padding;
    ``sums`` (layers, B, D); ``count`` (B,) float: the items so far. Returns the user
    vectors (B, D) and the new item's keys and values (layers, B, H, 1, Dh) and the new
    sums."""
    cfg = model.cfg
    x = model.embed(model.item_emb(item), pos).unsqueeze(1)  # (B, 1, D)
    mask = past[:, None, None, :]  # (B, 1, 1, T)
    new_keys, new_values, new_sums = [], [], []
    for i, block in enumerate(_blocks(model)):
        attn = block.attn
        q, k, v = (_heads(t, cfg.heads) for t in attn.qkv(block.attn_input(x)).split(cfg.dim, dim=2))
        # the past and the new item scored apart, then one softmax: no copy of the state
        # with the new column appended
        old = ((q @ keys[i].transpose(-2, -1)) * attn.scale).masked_fill(~mask, -1e9)  # (B, H, 1, T)
        own = (q * k).sum(dim=-1, keepdim=True) * attn.scale  # (B, H, 1, 1)
        att = torch.cat([old, own], dim=-1).softmax(dim=-1)
        y = (att[..., :-1] @ values[i] + att[..., -1:] * v).transpose(1, 2).reshape(x.shape)
        total = sums[i] + x[:, 0]
        mean = (total / (count + 1).unsqueeze(1)).unsqueeze(1) if cfg.lowpass else None
        out = block.mix(x, attn.proj(y), mean)
        new_keys.append(k)
        new_values.append(v)
        new_sums.append(total)
        x = block.feed_forward(out)
    return model.ln_f(x[:, 0]), (torch.stack(new_keys), torch.stack(new_values), torch.stack(new_sums))


class Prefill(nn.Module):
    """:func:`prefill` as a module (what ``prefill.onnx`` holds), the keys and values out
    in float16, as serving stores them."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vec, (k, v, s) = prefill(self.model, item_seq)
        return vec, k.to(torch.float16), v.to(torch.float16), s


class Step(nn.Module):
    """:func:`step` as a module (what ``step.onnx`` holds): keys and values in and out in
    float16 (the graph widens them: cheaper than numpy's conversion), the rest float32.
    The state comes in one input per block (``keys_0``, ``keys_1``, …, then ``values_0``,
    …: :func:`step_inputs`): a block reads its own input directly, where one stacked input
    would be split into copies inside the graph (more than half of a step's time at 200
    items)."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, item: torch.Tensor, pos: torch.Tensor, past: torch.Tensor, sums: torch.Tensor,
                count: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.model.cfg.layers
        keys = [k.to(torch.float32) for k in state[:n]]
        values = [v.to(torch.float32) for v in state[n:]]
        vec, (k, v, s) = step(self.model, item, pos, keys, values, past, sums, count)
        return vec, k.to(torch.float16), v.to(torch.float16), s


def step_inputs(layers: int) -> list[str]:
    """The step model's input names, in :class:`Step`'s order."""
    return (["item", "pos", "past", "sums", "count"] + [f"keys_{i}" for i in range(layers)]
            + [f"values_{i}" for i in range(layers)])
