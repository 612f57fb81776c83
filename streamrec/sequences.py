"""Item-index sequences as the encoder takes them (pure numpy; training and serving share it).

Index 0 is padding; real items are 1..N (:mod:`serving.vocab`). The encoder
reads ``[B, L]`` int64 rows, the most recent item last, padding on the left.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    The encoder accepts any width up to max_len (positions count from the end),
    so leading columns of pure padding are never computed.
    """
    return left_pad(seqs, max(1, min(max_len, max((len(s) for s in seqs), default=1))))
