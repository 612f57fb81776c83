from pathlib import Path

import numpy as np
import pytest
import torch

from serving.bundle import load_bundle
from serving.encoder import Encoder, make_session
from serving.manifest import REFERENCE_ATOL
from training.bundle_eval import evaluate_bundle
from training.data import leave_one_out, load_dataset, load_movielens
from training.export import ExportError, check_parity
from training.model import SASRec, SASRecConfig
from training.pipeline import TrainReport
from training.synthetic import SyntheticSpec, generate


def test_sequence_loader_and_split(tmp_path: Path) -> None:
    p = tmp_path / "d.txt"
    p.write_text("1 10 11 12 13\n2 11 12\n3 12 10 13\n")
    d = load_dataset(p)
    assert d.users == ["1", "2", "3"] and d.vocab.ids == ("10", "11", "12", "13")
    s = leave_one_out(d)
    assert s.eval_users.tolist() == [0, 2]
    assert d.vocab.decode(s.train[0]) == ["10", "11"] and s.train[1] == d.vocab.encode(["11", "12"])
    assert d.vocab.decode(list(s.valid_target)) == ["12", "10"]
    assert d.vocab.decode(list(s.test_target)) == ["13", "13"]
    assert [d.vocab.decode(x) for x in s.inputs("test")] == [["10", "11", "12"], ["12", "10"]]


def test_movielens_sorted_by_time(tmp_path: Path) -> None:
    p = tmp_path / "ratings.dat"
    p.write_text("1::20::5::300\n1::10::3::100\n2::10::4::5\n1::30::1::200\n")
    d = load_movielens(p)
    assert d.vocab.decode(d.seqs[0]) == ["10", "30", "20"]
    assert load_dataset(p).fingerprint() == d.fingerprint()


def test_synthetic_is_deterministic() -> None:
    spec = SyntheticSpec(users=50, items=40, clusters=5)
    assert generate(spec).fingerprint() == generate(spec).fingerprint()
    assert generate(spec).fingerprint() != generate(SyntheticSpec(users=50, items=40, clusters=5, seed=8)).fingerprint()


def test_sasrec_clearly_beats_popularity_on_synthetic(tiny_report: TrainReport) -> None:
    t, p = tiny_report.test, tiny_report.popularity_test
    assert t["full"]["ndcg@10"] > 2 * p["full"]["ndcg@10"]
    assert t["full"]["hr@10"] > p["full"]["hr@10"] + 0.1
    assert t["sampled"]["ndcg@10"] > p["sampled"]["ndcg@10"]


def test_bundle_scores_what_training_claims(tiny_report: TrainReport, tiny_data) -> None:  # type: ignore[no-untyped-def]
    served = evaluate_bundle(tiny_report.bundle, tiny_data, "test")
    for proto in ("full", "sampled"):
        for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@5"):
            assert abs(served[proto][k] - tiny_report.test[proto][k]) <= 1e-3
    assert load_bundle(tiny_report.bundle).manifest.metrics["onnx_parity_max_abs_diff"] <= REFERENCE_ATOL


def test_parity_check_rejects_a_different_model(tiny_report: TrainReport) -> None:
    cfg = SASRecConfig(**{k: v for k, v in load_bundle(tiny_report.bundle).manifest.model_config.items()
                          if k != "train"})
    torch.manual_seed(123)
    other = SASRec(cfg).eval()
    enc = Encoder(make_session(tiny_report.bundle / "encoder.onnx"))
    seqs = np.arange(1, 2 * cfg.max_len + 1, dtype=np.int64).reshape(2, cfg.max_len) % cfg.num_items + 1
    with pytest.raises(ExportError, match="disagree"):
        check_parity(other, enc, seqs)


@pytest.mark.parametrize("lowpass", [0.0, 0.7])
def test_last_only_and_trimmed_padding_match_the_full_forward(lowpass: float) -> None:
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(num_items=30, max_len=12, dim=16, layers=2, heads=2, lowpass=lowpass)).eval()
    seqs = torch.tensor([[0] * 8 + [3, 4, 5, 6], [0] * 10 + [7, 8]])
    with torch.no_grad():
        full = m.hidden(seqs)
        assert torch.allclose(m(seqs), full[:, -1], atol=1e-5)
        assert torch.allclose(m(seqs[:, -4:]), full[:, -1], atol=1e-5)  # leading pad columns cut
        later = seqs.clone()
        later[0, -1] = 9  # causal: a different last item changes no earlier position
        assert torch.allclose(m.hidden(later)[0, :-1], full[0, :-1], atol=1e-6)
        assert not torch.allclose(m.hidden(later)[0, -1], full[0, -1])


def test_lowpass_bundle_exports_with_parity(tiny_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.pipeline import train_and_export
    from training.train import TrainConfig

    r = train_and_export(tiny_data, tmp_path / "lp", {"max_len": 20, "dim": 16, "layers": 2,
                                                      "lowpass": 0.7},
                         TrainConfig(epochs=1, patience=1, batch_size=64), progress=False)
    assert r.manifest.metrics["onnx_parity_max_abs_diff"] <= REFERENCE_ATOL
    assert r.manifest.model_config["lowpass"] == 0.7
    assert load_bundle(tmp_path / "lp").manifest.version == r.manifest.version


def test_onnx_encoder_accepts_any_length_up_to_max_len(tiny_bundle_dir: Path) -> None:
    b = load_bundle(tiny_bundle_dir)
    full = np.zeros((2, b.max_len), dtype=np.int64)
    full[0, -3:], full[1, -1:] = [1, 2, 3], [4]
    assert np.allclose(b.encoder.encode(full), b.encoder.encode(full[:, -3:]), atol=1e-5)


def test_bpr_learns_on_synthetic(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.baselines import BPRConfig, bpr_metrics, popularity_metrics, train_bpr

    split = leave_one_out(tiny_data)
    model, valid, _, _ = train_bpr(split, BPRConfig(dim=16, epochs=30, batch_size=256, lr=0.02,
                                                    patience=30), progress=False)
    bpr = bpr_metrics(model, split, "test")
    pop = popularity_metrics(split, "test")
    assert bpr["full"]["ndcg@10"] > pop["full"]["ndcg@10"]
    assert valid["ndcg@10"] > 0


@pytest.mark.parametrize("loss", ["bce", "sampled", "ce", "ce-mask-seen"])
def test_every_loss_learns_above_popularity(tiny_data, loss: str) -> None:  # type: ignore[no-untyped-def]
    from training.baselines import popularity_metrics
    from training.train import TrainConfig, evaluate_model, train_sasrec

    split = leave_one_out(tiny_data)
    cfg = TrainConfig(epochs=6, patience=6, batch_size=64, loss=loss.removesuffix("-mask-seen"),
                      negatives=32, hard_negatives=8 if loss == "sampled" else 0, seed=3,
                      mask_seen=loss.endswith("mask-seen"))
    r = train_sasrec(split, SASRecConfig(tiny_data.num_items, max_len=20, dim=32, layers=1), cfg,
                     progress=False)
    assert evaluate_model(r.model, split, "test")["ndcg@10"] > popularity_metrics(split, "test")["full"]["ndcg@10"]


def test_seen_items_mask_covers_the_input_so_far_but_never_the_target() -> None:
    from training.model import _seen_before

    seq = torch.tensor([[0, 0, 3, 1, 3, 2], [5, 4, 1, 2, 3, 4]])  # inputs, left-padded
    pos = torch.tensor([[0, 3, 1, 3, 2, 4], [4, 1, 2, 3, 4, 5]])  # next-item targets
    where = pos > 0
    mask = _seen_before(seq, where, pos[where], num_items=5)
    masked = [{i + 1 for i in row.nonzero().flatten().tolist()} for row in mask]
    assert masked == [
        set(), {3}, {1}, {1, 3}, {1, 2, 3},  # row 0: the target 3 seen before is not masked
        {5}, {4, 5}, {1, 4, 5}, {1, 2, 4, 5}, {1, 2, 3, 5}, {1, 2, 3, 4},  # row 1
    ]


def test_nearest_items_excludes_itself() -> None:
    from training.model import nearest_items

    torch.manual_seed(0)
    m = SASRec(SASRecConfig(num_items=40, max_len=5, dim=8, layers=1, heads=1))
    nb = nearest_items(m, k=5, chunk=7)
    assert nb.shape == (41, 5)
    assert all(i not in nb[i].tolist() for i in range(1, 41)) and (nb[1:] >= 1).all()


def test_training_is_deterministic_with_a_seed(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.train import TrainConfig, train_sasrec

    split = leave_one_out(tiny_data)
    cfg = TrainConfig(epochs=2, patience=2, batch_size=64, seed=9)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    a = train_sasrec(split, mcfg, cfg, progress=False).model.state_dict()
    b = train_sasrec(split, mcfg, cfg, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refit_trains_on_the_validation_items_for_the_selected_epochs(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.train import TrainConfig, train_sasrec

    split = leave_one_out(tiny_data)
    mcfg = SASRecConfig(tiny_data.num_items, max_len=20, dim=16, layers=1)
    r = train_sasrec(split, mcfg, TrainConfig(epochs=4, patience=4, batch_size=64, refit=True),
                     progress=False)
    assert r.epochs_run == 4 + r.best_epoch  # selection run, then refit for best_epoch epochs
    assert "ndcg@10" in r.valid  # validation metrics come from the selection run
    assert "ndcg@10" not in r.history[-1]  # the refit never reports validation
