"""Matching clicks to the lists shown before them, and mixing impression negatives into the loss."""

from __future__ import annotations

import torch

from training.data.from_topic import Click, Impressions, encode_negatives, impression_negatives
from training.data.sequences import from_id_sequences
from training.models.retrieval import SASRec, SASRecConfig
from training.models.train import shown_tensor


def _imps() -> Impressions:
    imps = Impressions()
    imps.add("L1", "u", 100, ["a", "b", "c", "d"], None)
    imps.add("L2", "u", 200, ["e", "f", "a", "g"], None)
    imps.add("L2", "u", 210, None, ["f", "g"])  # the application showed two of L2
    imps.add("X", "v", 150, ["a", "b"], None)
    return imps


def test_latest_list_before_the_click_cut_to_top_k() -> None:
    clicks = [Click("b", 150), Click("c", 250), Click("z", 50)]
    # 150 -> L1 (written at 100), top 3 = a b c, minus b; 250 -> L2, shown f g; 50 -> none
    assert impression_negatives(clicks, "u", _imps(), top_k=3) == [["a", "c"], ["f", "g"], []]


def test_a_named_list_wins_over_the_latest() -> None:
    clicks = [Click("a", 250, "L1"), Click("a", 250, "unknown")]
    assert impression_negatives(clicks, "u", _imps(), top_k=10) == [["b", "c", "d"], ["f", "g"]]


def test_a_list_written_at_the_click_time_is_not_before_it() -> None:
    assert impression_negatives([Click("q", 200)], "u", _imps(), top_k=2) == [["a", "b"]]


def test_later_clicks_in_the_window_are_not_negatives() -> None:
    clicks = [Click("a", 120), Click("c", 130), Click("d", 5000)]
    assert impression_negatives(clicks, "u", _imps(), 10, window_ms=100) == [["b", "d"], ["a", "b", "d"], ["f", "g"]]
    # no window: only the clicked item itself is removed; the click at 5000 held L2
    assert impression_negatives(clicks, "u", _imps(), 10) == [["b", "c", "d"], ["a", "b", "d"], ["f", "g"]]


def test_other_users_lists_do_not_count() -> None:
    assert impression_negatives([Click("a", 160)], "w", _imps()) == [[]]


def test_encode_drops_items_never_clicked() -> None:
    data = from_id_sequences("t", ["u"], [["b", "c", "a"]])  # vocab a=1 b=2 c=3
    clicks = [[Click("b", 150), Click("c", 160), Click("a", 170)]]
    assert encode_negatives(data, clicks, _imps(), top_k=4) == [[[1, 3], [1, 2], [2, 3]]]


def test_shown_tensor_aligns_with_the_targets() -> None:
    # user 0: prefix of 3 items -> targets are positions 1, 2; left-padded to max_len 4
    t = shown_tensor([[1, 2, 3], [4]], [[[9], [5, 6, 7], [8]], [[1]]], max_len=4, n=2)
    assert t.shape == (1, 4, 2)
    assert t[0].tolist() == [[0, 0], [0, 0], [5, 6], [8, 0]]


def _model() -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(num_items=6, max_len=4, dim=8, layers=1, heads=1, dropout=0.0)).eval()


def test_mixed_loss_is_the_softmax_over_target_uniform_and_shown() -> None:
    model = _model()
    seq, pos = torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 0, 2, 3]])
    shown = torch.tensor([[[0], [0], [4], [0]]])
    torch.manual_seed(1)
    got = model.loss(seq, pos, "sampled", negatives=3, shown=shown)
    torch.manual_seed(1)
    neg = torch.randint(1, 7, (3,))
    easy = torch.randint(1, 7, (2, 2))
    E = model.item_table()
    h = model.hidden(seq, table=E)[pos > 0]
    y = torch.tensor([2, 3])
    cols = torch.stack([torch.tensor([4, easy[0, 1]]), easy[1]])  # position 2 had none: uniform
    logits = torch.cat([(h * E[y]).sum(-1, keepdim=True), h @ E[neg].T, (h.unsqueeze(1) * E[cols]).sum(-1)], 1)
    items = torch.cat([y.unsqueeze(1), neg.expand(2, 3), cols], 1)
    logits[:, 1:] = logits[:, 1:].masked_fill(items[:, 1:] == y.unsqueeze(1), -1e9)
    want = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(got, want)


def test_no_shown_tensor_is_the_plain_sampled_loss() -> None:
    model = _model()
    seq, pos = torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 0, 2, 3]])
    torch.manual_seed(1)
    a = model.loss(seq, pos, "sampled", negatives=3)
    torch.manual_seed(1)
    b = model.loss(seq, pos, "sampled", negatives=3, shown=None)
    assert torch.equal(a, b)
