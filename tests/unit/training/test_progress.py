"""Unit tests of :mod:`training.models.progress`: no carriage-return frames outside a terminal."""

from __future__ import annotations

import io

from tqdm import tqdm

from training.models.progress import EpochLine, epochs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_outside_a_terminal_each_epoch_is_one_line_without_carriage_returns() -> None:
    out = io.StringIO()
    bar = epochs(3, "sasrec", stream=out)
    assert isinstance(bar, EpochLine)
    for epoch in bar:
        bar.set_postfix(loss=f"{1 / epoch:.2f}", ndcg10="0.0500")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [ln.split(" (")[0] for ln in lines] == [
        "sasrec epoch 1/3: loss=1.00 ndcg10=0.0500",
        "sasrec epoch 2/3: loss=0.50 ndcg10=0.0500",
        "sasrec epoch 3/3: loss=0.33 ndcg10=0.0500",
    ]
    assert all(ln.endswith(" s)") for ln in lines)


def test_an_early_stop_keeps_the_lines_written_so_far() -> None:
    out = io.StringIO()
    bar = epochs(10, "bpr", stream=out)
    for epoch in bar:
        bar.set_postfix(ndcg10="0.1")
        if epoch == 2:
            break
    assert len(out.getvalue().splitlines()) == 2


def test_on_a_terminal_it_is_a_tqdm_bar() -> None:
    bar = epochs(2, "sasrec", stream=Terminal())
    assert isinstance(bar, tqdm)
    assert list(bar) == [1, 2]


def test_disabled_progress_writes_nothing_and_still_counts() -> None:
    out = io.StringIO()
    bar = epochs(2, "refit", enabled=False, stream=out)
    for _ in bar:
        bar.set_postfix(loss="0.1")
    assert list(epochs(2, "x", enabled=False, stream=out)) == [1, 2]
    assert out.getvalue() == ""
