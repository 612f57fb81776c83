"""Unit tests of :mod:`training.model`."""

from __future__ import annotations

import pytest
import torch

from training.model import SASRec, SASRecConfig


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

