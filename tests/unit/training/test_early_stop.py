"""Unit tests of :mod:`training.models.early_stop`."""

from __future__ import annotations

import torch
from torch import nn

from training.models.early_stop import EarlyStopping


def _model(value: float) -> nn.Linear:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_stops_after_patience_epochs_without_improvement_and_restores_the_best() -> None:
    stop = EarlyStopping(patience=2)
    model = _model(0.0)
    decisions = []
    for epoch, score in enumerate([0.1, 0.3, 0.2, 0.25, 0.4], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        decisions.append(stop.update(epoch, score, model, {"ndcg@10": score}))
        if decisions[-1]:
            break
    assert decisions == [False, False, False, True]  # epochs 3 and 4 did not beat epoch 2
    assert (stop.best_epoch, stop.best, stop.best_valid) == (2, 0.3, {"ndcg@10": 0.3})
    stop.restore(model)
    assert model.weight.item() == 2.0  # the weights of epoch 2, not of the last epoch


def test_the_kept_weights_are_a_copy() -> None:
    stop = EarlyStopping(patience=5)
    model = _model(1.0)
    stop.update(1, 0.5, model)
    with torch.no_grad():
        model.weight.fill_(9.0)  # training goes on in place
    stop.restore(model)
    assert model.weight.item() == 1.0


def test_a_time_budget_stops_at_once() -> None:
    stop = EarlyStopping(patience=100, max_minutes=0.0)
    assert stop.update(1, 0.1, _model(0.0)) is True
