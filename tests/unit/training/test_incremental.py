"""Unit tests of :mod:`training.models.incremental`: the step computation is the encoder's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrec.sequences import Window, left_pad
from training.models.incremental import prefill, step
from training.models.retrieval import SASRec, SASRecConfig
from training.models.train import anchored_rows, training_pairs


def _model(lowpass: float, layers: int = 2, norm: str = "pre") -> SASRec:
    torch.manual_seed(7)
    return SASRec(SASRecConfig(num_items=40, max_len=16, dim=16, heads=2, layers=layers,
                               lowpass=lowpass, positions="start", norm=norm)).eval()


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("lowpass", [0.0, 0.5])
def test_prefill_then_steps_equal_the_full_encoder(lowpass: float, norm: str) -> None:
    model = _model(lowpass, norm=norm)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 41, size=n).tolist() for n in (1, 3, 9, 16)]
    with torch.no_grad():
        full = model(torch.from_numpy(left_pad(seqs, 16)))
        vec, _ = prefill(model, torch.from_numpy(left_pad(seqs, 16)))
        assert torch.allclose(vec, full, atol=1e-5)
        # the last item as a step on top of the rest (different lengths: left-padded state)
        rest = [s[:-1] for s in seqs[1:]]
        T = max(map(len, rest))
        _, (k, v, sums) = prefill(model, torch.from_numpy(left_pad(rest, T)))
        past = torch.from_numpy(left_pad(rest, T) > 0)
        n = torch.tensor([len(r) for r in rest])
        got, (nk, nv, _) = step(model, torch.tensor([s[-1] for s in seqs[1:]]), n, k, v, past, sums,
                                n.to(torch.float32))
        assert torch.allclose(got, full[1:], atol=1e-5)
        assert nk.shape == (2, 3, 2, 1, 8) and nv.shape == nk.shape


def test_positions_do_not_shift_when_an_item_is_added() -> None:
    """With positions from the start, the hidden state at a position is the same whatever
    follows it (causal, nothing moves); with positions from the end it is not."""
    seq = [3, 9, 4, 7]
    for positions, same in (("start", True), ("end", False)):
        torch.manual_seed(1)
        m = SASRec(SASRecConfig(num_items=20, max_len=8, dim=16, heads=2, positions=positions)).eval()
        with torch.no_grad():
            short = m.hidden(torch.tensor([seq[:3]]))[0, -1]
            long = m.hidden(torch.tensor([seq]))[0, 2]
        assert torch.allclose(short, long, atol=1e-5) is same


def test_anchored_training_rows_read_the_served_window_once_per_target() -> None:
    max_len = 6
    window = Window(max_len, anchored=True)
    seq = list(range(1, 21))
    inputs, targets = training_pairs([seq], max_len, "positions", anchored=True)
    seen: list[int] = []
    for row_in, row_t in zip(inputs.tolist(), targets.tolist(), strict=True):
        real = [x for x in row_in if x > 0]
        off = max_len - len(real)
        for j, target in enumerate(row_t[off:]):
            if target:
                t = seq.index(target)  # the history before the target is seq[:t]
                assert real[:j + 1] == list(window.cut(seq[:t]))
                seen.append(target)
    assert seen == seq[1:]  # every target once, in order
    assert anchored_rows(seq[:5], max_len) == [(0, 1, 4)]
    with pytest.raises(ValueError, match="positions must be one of"):
        SASRecConfig(num_items=3, positions="middle")
