"""Unit tests of :mod:`training.evaluation.bundle`."""

from __future__ import annotations

from serving.bundle import load_bundle
from serving.manifest import REFERENCE_ATOL
from training.evaluation.bundle import evaluate_bundle
from training.pipeline import TrainReport


def test_bundle_scores_what_training_claims(tiny_report: TrainReport, tiny_data) -> None:  # type: ignore[no-untyped-def]
    served = evaluate_bundle(tiny_report.bundle, tiny_data, "test")
    for proto in ("full", "sampled"):
        for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@5"):
            assert abs(served[proto][k] - tiny_report.test[proto][k]) <= 1e-3
    assert load_bundle(tiny_report.bundle).manifest.metrics["onnx_parity_max_abs_diff"] <= REFERENCE_ATOL

