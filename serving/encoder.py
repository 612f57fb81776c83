"""ONNX Runtime wrapper for the sequence encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def make_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with full graph optimisation and a fixed thread budget.

    ``threads`` is the intra-op pool. Keep it at the CPU quota minus what the
    event loop needs: more threads than cores make latency worse, not better.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class Encoder:
    """``encode(seqs [B, L] int64) -> [B, D] float32``. Thread-safe; releases the GIL."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def encode(self, seqs: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.output_name], {self.input_name: seqs})
        return np.ascontiguousarray(out, dtype=np.float32)
