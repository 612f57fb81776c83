"""Unit tests of :mod:`training.models.train`."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from training.data.sequences import leave_one_out
from training.models.retrieval import SASRecConfig
from training.models.train import TrainConfig
from training.pipeline import TrainReport


def test_sasrec_clearly_beats_popularity_on_synthetic(tiny_report: TrainReport) -> None:
    t, p = tiny_report.test, tiny_report.popularity_test
    assert t["full"]["ndcg@10"] > 2 * p["full"]["ndcg@10"]
    assert t["full"]["hr@10"] > p["full"]["hr@10"] + 0.1
    assert t["sampled"]["ndcg@10"] > p["sampled"]["ndcg@10"]


def test_bpr_learns_on_synthetic(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.baselines import BPRConfig, bpr_metrics, popularity_metrics, train_bpr

    split = leave_one_out(tiny_data)
    model, valid, _, _ = train_bpr(split, BPRConfig(dim=16, epochs=30, batch_size=256, lr=0.02,
                                                    patience=30), progress=False)
    bpr = bpr_metrics(model, split, "test")
    pop = popularity_metrics(split, "test")
    assert bpr["full"]["ndcg@10"] > pop["full"]["ndcg@10"]
    assert valid["ndcg@10"] > 0


def test_samples_prefixes_and_windows_cover_every_target() -> None:
    from training.models.train import training_pairs

    inputs, targets = training_pairs([[1, 2, 3, 4], [5, 6], [7]], 2, "prefixes")
    # one sample per target position; the last max_len items before the target, right-aligned
    assert inputs.tolist() == [[0, 1], [1, 2], [2, 3], [0, 5]]
    assert targets.tolist() == [[0, 2], [0, 3], [0, 4], [0, 6]]
    inputs, targets = training_pairs([[1, 2, 3, 4], [5, 6], [7]], 2)
    assert inputs.tolist() == [[2, 3], [0, 5]] and targets.tolist() == [[3, 4], [0, 6]]
    # windows: every item a target once, each window with its own inputs
    inputs, targets = training_pairs([[1, 2, 3, 4, 5, 6], [5, 6]], 2, "windows")
    assert inputs.tolist() == [[4, 5], [2, 3], [0, 1], [0, 5]]
    assert targets.tolist() == [[5, 6], [3, 4], [0, 2], [0, 6]]
    with pytest.raises(ValueError, match="samples must be one of"):
        training_pairs([[1, 2]], 2, "every")


def test_a_loss_at_the_last_position_only_equals_the_full_pass_there(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.retrieval import SASRec
    from training.models.train import training_pairs

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(tiny_data.num_items, max_len=8, dim=16, layers=2, lowpass=0.5)).eval()
    seq, pos = training_pairs(tiny_data.seqs[:20], 8, "prefixes")
    full = pos.clone()
    full[:, :-1] = 1  # a target elsewhere too: the full pass; then only the last column's loss
    with torch.no_grad():
        h_last = model.hidden(seq, last_only=True)[:, -1]
        h_full = model.hidden(seq)[:, -1]
    assert torch.allclose(h_last, h_full, atol=1e-5)
    assert torch.isfinite(model.loss(seq, pos, "ce"))


@pytest.mark.parametrize("loss", ["bce", "sampled", "ce", "ce-mask-seen", "ce-prefixes"])
def test_every_loss_learns_above_popularity(tiny_data, loss: str) -> None:  # type: ignore[no-untyped-def]
    from training.models.baselines import popularity_metrics
    from training.models.train import TrainConfig, evaluate_model, train_sasrec

    split = leave_one_out(tiny_data)
    cfg = TrainConfig(epochs=6, patience=6, batch_size=64, loss=loss.split("-")[0],
                      negatives=32, hard_negatives=8 if loss == "sampled" else 0, seed=3,
                      mask_seen=loss.endswith("mask-seen"),
                      samples="prefixes" if loss.endswith("prefixes") else "positions")
    r = train_sasrec(split, SASRecConfig(tiny_data.num_items, max_len=20, dim=32, layers=1), cfg,
                     progress=False)
    assert evaluate_model(r.model, split, "test")["ndcg@10"] > popularity_metrics(split, "test")["full"]["ndcg@10"]


def test_training_is_deterministic_with_a_seed(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig, train_sasrec

    split = leave_one_out(tiny_data)
    cfg = TrainConfig(epochs=2, patience=2, batch_size=64, seed=9)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    a = train_sasrec(split, mcfg, cfg, progress=False).model.state_dict()
    b = train_sasrec(split, mcfg, cfg, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refit_trains_on_the_validation_items_for_the_selected_epochs(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig, train_sasrec

    split = leave_one_out(tiny_data)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    r = train_sasrec(split, mcfg, TrainConfig(epochs=4, patience=4, batch_size=64, refit=True),
                     progress=False)
    assert r.epochs_run == 4 + r.best_epoch  # selection run, then refit for best_epoch epochs
    assert "ndcg@10" in r.valid  # validation metrics come from the selection run
    assert "ndcg@10" not in r.history[-1]  # the refit never reports validation



def test_the_two_tower_model_trains_exports_and_serves(tiny_data, tmp_path) -> None:
    from serving.bundle import load_bundle
    from serving.funnel import recommend
    from training.pipeline import train_and_export

    report = train_and_export(tiny_data, tmp_path / "tt", {"max_len": 20, "dim": 32, "hidden": 64},
                              TrainConfig(epochs=6, patience=6, batch_size=64, seed=1, loss="sampled",
                                          negatives=32, hard_negatives=32),
                              progress=False, model_name="twotower")
    b = load_bundle(report.bundle)
    assert b.manifest.model == "twotower" and report.to_dict()["model"] == "twotower"
    assert report.test["full"]["ndcg@10"] > 2 * report.popularity_test["full"]["ndcg@10"]
    history = tiny_data.vocab.decode(tiny_data.seqs[0][-5:])
    assert len(recommend(b, [history], 10)[0].items) == 10


def test_a_weight_average_leaves_training_alone_and_is_what_validation_and_the_model_read(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig, train_sasrec

    split = leave_one_out(tiny_data)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    plain = train_sasrec(split, mcfg, TrainConfig(epochs=3, patience=3, batch_size=64, seed=9), progress=False)
    avg = train_sasrec(split, mcfg, TrainConfig(epochs=3, patience=3, batch_size=64, seed=9, ema=0.9),
                       progress=False)
    # the same optimiser trajectory: every epoch's training loss is identical
    assert [h["loss"] for h in avg.history] == [h["loss"] for h in plain.history]
    # validation scored the average, and the model returned is the average
    assert [h["ndcg@10"] for h in avg.history] != [h["ndcg@10"] for h in plain.history]
    a, p = avg.model.state_dict(), plain.model.state_dict()
    assert not all(torch.equal(a[k], p[k]) for k in a)


def test_weight_average_follows_its_formula_and_restores_the_weights() -> None:
    from torch import nn

    from training.models.averaging import WeightAverage

    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    avg = WeightAverage(layer, decay=0.5)
    assert avg.rate() == pytest.approx(0.1)  # warm-up: min(0.5, 1 / 10)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[11.0, 2.0]]))
    avg.update()  # 0.1 * 1 + 0.9 * 11 = 10
    assert avg.rate() == pytest.approx(2 / 11)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[21.0, 2.0]]))
    avg.update()  # d = 2/11: 2/11 * 10 + 9/11 * 21 = 19
    assert torch.allclose(avg.average[0], torch.tensor([[19.0, 2.0]]))
    with avg.applied():
        assert torch.allclose(layer.weight, torch.tensor([[19.0, 2.0]]))
    assert torch.equal(layer.weight, torch.tensor([[21.0, 2.0]]))  # the training weights back
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(layer, decay=1.0)


def test_plateau_cuts_fall_every_n_epochs_after_the_best() -> None:
    from training.models.train import plateau_cut

    assert [e for e in range(1, 12) if plateau_cut(e, 2, 3)] == [5, 8, 11]
    assert not any(plateau_cut(e, 2, 0) for e in range(1, 12))  # 0: off
    assert not plateau_cut(4, 4, 1)  # the best epoch itself never cuts


def test_the_learning_rate_is_cut_on_plateaus_and_the_refit_replays_the_cuts(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig, plateau_cut, train_sasrec

    split = leave_one_out(tiny_data)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    cfg = TrainConfig(epochs=8, patience=8, batch_size=64, seed=9, lr=3e-2, lr_plateau=1, lr_factor=0.5)
    r = train_sasrec(split, mcfg, cfg, progress=False)
    rates = [h["lr"] for h in r.history]
    # replay the rule from the validation scores the run recorded
    best, best_epoch, rate, expected = -1.0, 0, cfg.lr, []
    for h in r.history:
        expected.append(rate)
        if h["ndcg@10"] > best:
            best, best_epoch = h["ndcg@10"], h["epoch"]
        if plateau_cut(h["epoch"], best_epoch, cfg.lr_plateau):
            rate *= cfg.lr_factor
    assert rates == expected and min(rates) < cfg.lr  # at least one cut happened
    again = train_sasrec(split, mcfg, replace(cfg, refit=True), progress=False)
    selection, refit = again.history[:len(r.history)], again.history[len(r.history):]
    assert [h["lr"] for h in selection] == rates
    assert [h["lr"] for h in refit] == rates[:r.best_epoch] and min(rates[:r.best_epoch]) < cfg.lr
    # off: one rate throughout; the first epoch (before any cut) is the same run
    plain = train_sasrec(split, mcfg, replace(cfg, lr_plateau=0), progress=False)
    assert {h["lr"] for h in plain.history} == {cfg.lr}
    assert plain.history[0]["loss"] == r.history[0]["loss"]


def test_the_progress_line_shows_the_rate_only_under_a_plateau_schedule(tiny_data, capsys) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig, train_sasrec

    split = leave_one_out(tiny_data)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    train_sasrec(split, mcfg, TrainConfig(epochs=1, patience=2, batch_size=64, lr=3e-2, lr_plateau=1), progress=True)
    assert "ndcg10=" in (err := capsys.readouterr().err) and " lr=0.03 " in err
    train_sasrec(split, mcfg, TrainConfig(epochs=1, patience=2, batch_size=64), progress=True)
    assert "ndcg10=" in (err := capsys.readouterr().err) and "lr=" not in err
