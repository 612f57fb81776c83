"""Early stopping on a validation score: the one loop rule every trainer uses."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class EarlyStopping:
    """Keep the best epoch's weights; say when to stop.

    Stop after ``patience`` epochs without a better score, or once
    ``max_minutes`` have passed since construction; ``restore`` puts the best
    epoch's weights back.
    """

    patience: int
    max_minutes: float | None = None
    best: float = -math.inf
    best_epoch: int = 0
    best_valid: dict[str, Any] = field(default_factory=dict)
    _state: dict[str, Any] | None = field(default=None, repr=False)
    _start: float = field(default_factory=time.monotonic, repr=False)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._start

    def update(self, epoch: int, score: float, model: nn.Module,
               valid: dict[str, Any] | None = None) -> bool:
        """Record ``epoch``'s score (keeping the weights if it is the best); True = stop."""
        if score > self.best:
            self.best, self.best_epoch, self.best_valid = score, epoch, valid or {}
            self._state = copy.deepcopy(model.state_dict())
        out_of_time = self.max_minutes is not None and self.seconds > 60 * self.max_minutes
        return epoch - self.best_epoch >= self.patience or out_of_time

    def restore(self, model: nn.Module) -> None:
        if self._state is None:
            raise RuntimeError("no epoch was recorded")
        model.load_state_dict(self._state)
