"""The item tower of a bundle: attribute tokens in, an item vector in the index's space out.

Present in bundles trained with item attributes (``item_tower.onnx`` and
``attributes.json``, see :mod:`serving.manifest`). A new item (not in the
bundle's vocabulary) is embedded from its attributes alone, which is what the
tower was trained to make usable (ID dropout, :mod:`training.models.retrieval`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort


class ItemTower:
    """``embed(token lists) -> [B, D] float32``; unknown tokens are ignored."""

    def __init__(self, session: ort.InferenceSession, tokens: Sequence[str], max_attrs: int) -> None:
        self.session = session
        self.index = {t: i + 1 for i, t in enumerate(tokens)}
        self.max_attrs = max(1, max_attrs)
        self.input_name = session.get_inputs()[0].name

    def rows(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(token_lists), self.max_attrs), dtype=np.int64)
        for r, tokens in enumerate(token_lists):
            known = [self.index[t] for t in dict.fromkeys(tokens) if t in self.index][:self.max_attrs]
            out[r, :len(known)] = known
        return out

    def known(self, tokens: Sequence[str]) -> int:
        """How many of ``tokens`` the tower knows (0: it can only give the zero vector)."""
        return sum(1 for t in set(tokens) if t in self.index)

    def embed(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        if not token_lists:
            return np.zeros((0, 0), dtype=np.float32)
        (out,) = self.session.run(None, {self.input_name: self.rows(token_lists)})
        return np.ascontiguousarray(out, dtype=np.float32)
