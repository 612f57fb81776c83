"""Evaluate a bundle as served: ONNX Runtime user vectors against the FAISS index's vectors.

The serving stack (ONNX Runtime, FAISS) is imported when a bundle is evaluated,
not with this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serving.vocab import Vocabulary
from training.data.sequences import SequenceData, leave_one_out
from training.evaluation.evaluate import encode_all, evaluate_vectors
from training.evaluation.ranking_metrics import hr_ndcg


def remap(data: SequenceData, vocab_ids: tuple[str, ...]) -> tuple[SequenceData, int]:
    """Re-index ``data`` onto a bundle's vocabulary; returns the data and the dropped clicks."""
    vocab = Vocabulary(vocab_ids)
    seqs, dropped = [], 0
    for s in data.seqs:
        ext = data.vocab.decode(s)
        enc = vocab.encode(ext)
        dropped += len(ext) - len(enc)
        seqs.append(enc)
    return SequenceData(data.name, data.users, seqs, vocab), dropped


def evaluate_bundle(path: Path, data: SequenceData, split: str = "test", seed: int = 0) -> dict[str, Any]:
    from serving.bundle import load_bundle

    bundle = load_bundle(path)
    mapped, dropped = remap(data, bundle.vocab.ids)
    s = leave_one_out(mapped)
    # FAISS computes inner products against exactly these stored vectors.
    item_vecs = bundle.index.vectors().astype(np.float32)
    inputs = s.inputs(split)
    users = encode_all(bundle.encoder.encode, inputs, bundle.window)
    result: dict[str, Any] = dict(evaluate_vectors(users, item_vecs, inputs, s.targets(split), seed))
    if bundle.blend is not None:  # the content blend as the worker runs it (serving.content_blend)
        from training.models.blend import blended_ranks, candidate_lists

        keys, scores = candidate_lists(users, item_vecs, inputs, bundle.blend.candidates)
        result["content_blend"] = {
            "enabled": bundle.blend.enabled, "beta": bundle.blend.beta,
            "full": hr_ndcg(blended_ranks(bundle.blend, keys, scores, inputs, s.targets(split)))}
    return {**result, "users": len(s.eval_users), "bundle": bundle.version, "split": split,
            "unknown_clicks_dropped": dropped}
