"""Item-index sequences as the encoder takes them (pure numpy; training and serving share it).

Index 0 is padding; real items are 1..N (:mod:`serving.vocab`). The encoder
reads ``[B, L]`` int64 rows, the most recent item last, padding on the left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PAD = 0


def left_pad(seqs: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """[B, max_len] int64, each row the last ``max_len`` items right-aligned, PAD on the left."""
    out = np.full((len(seqs), max_len), PAD, dtype=np.int64)
    for row, seq in zip(out, seqs, strict=True):
        tail = seq[-max_len:]
        if tail:
            row[max_len - len(tail):] = tail
    return out


def pad_batch(seqs: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Left-padded to the batch's longest sequence, at most ``max_len``.

    The encoder accepts any width up to max_len (leading padding changes nothing:
    positions count from the end, or from the first real item), so leading columns of
    pure padding are never computed.
    """
    return left_pad(seqs, max(1, min(max_len, max((len(s) for s in seqs), default=1))))


def window_start(n: int, max_len: int) -> int:
    """Where the encoded window of a history of ``n`` items starts, for an encoder whose
    positions count from the window's first item (an *anchored* window).

    Up to ``max_len`` items the window is the whole history. Past that, it starts at a
    multiple of the stride ``max(1, max_len // 2)``, the latest one that leaves at most
    ``max_len`` items: the start moves only once per stride of new items, so between
    moves every new item extends the window by one and nothing in it shifts (what lets a
    cache of the encoder's state take one step per event). The window then holds between
    ``max_len - stride + 1`` and ``max_len`` items.
    """
    if n <= max_len:
        return 0
    stride = max(1, max_len // 2)
    return -(-(n - max_len) // stride) * stride


@dataclass(frozen=True, slots=True)
class Window:
    """Which of a history's items an encoder reads. ``anchored`` (positions counted from
    the window's first item): from :func:`window_start`; otherwise (positions counted from
    the end): the last ``max_len``."""

    max_len: int
    anchored: bool = False

    def start(self, n: int) -> int:
        """Index of the first item read of a history of ``n`` items."""
        return window_start(n, self.max_len) if self.anchored else max(0, n - self.max_len)

    def cut(self, seq: Sequence[int]) -> Sequence[int]:
        return seq[self.start(len(seq)):]

    def pad(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """The histories' windows, left-padded to the longest (as :func:`pad_batch`)."""
        return pad_batch([self.cut(s) for s in seqs], self.max_len)


def as_window(w: Window | int) -> Window:
    """``w``, or the last ``w`` items (the encoders whose positions count from the end)."""
    return w if isinstance(w, Window) else Window(w)
