"""An exponential moving average of a model's weights (Polyak averaging), kept beside
training: validation, early stopping and export read the average, while the optimiser
keeps stepping the raw weights, so the training trajectory is the same with or without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """``average = d * average + (1 - d) * weights`` after every optimiser step, with the
    decay ``d`` warmed up as ``min(decay, (1 + t) / (10 + t))`` at step ``t``: early on,
    when the weights move fast, the average follows them closely instead of holding on to
    the initial ones."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the decay of a weight average must be between 0 and 1, not {decay}")
        self.decay = decay
        self.steps = 0
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self._params]

    def rate(self) -> float:
        """The decay the next :meth:`update` applies."""
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self) -> None:
        d = self.rate()
        torch._foreach_lerp_(self.average, [p.detach() for p in self._params], 1.0 - d)
        self.steps += 1

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the average inside the block and its own weights again after."""
        raw = [p.detach().clone() for p in self._params]
        for p, a in zip(self._params, self.average, strict=True):
            p.copy_(a)
        try:
            yield
        finally:
            for p, r in zip(self._params, raw, strict=True):
                p.copy_(r)
