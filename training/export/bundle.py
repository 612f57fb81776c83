"""Export a trained model as a serving bundle (see :mod:`serving.manifest`).

The ONNX encoder must agree with torch on real sequences (max abs difference
at most ``serving.manifest.REFERENCE_ATOL``, the tolerance workers check the
stored reference outputs with) or export fails. The bundle is written to a
temporary directory next to the target and renamed into place
(:func:`streamrec.files.atomic_directory`), so readers never see half a bundle.
ONNX Runtime and FAISS are imported when a bundle is written, not with this
module: training imports neither.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import torch

from serving.manifest import (
    MANIFEST,
    REFERENCE_ATOL,
    STEP_ATOL,
    Manifest,
    Signature,
    TensorSpec,
    encode_manifest,
)
from serving.vocab import Vocabulary
from streamrec.errors import ExportError
from streamrec.files import atomic_directory, sha256_file
from streamrec.sequences import left_pad
from training.data.attributes import MAX_ATTRS, ItemAttributes
from training.models.retrieval import RetrievalModel, SASRec

if TYPE_CHECKING:
    from serving.encoder import Encoder
    from training.evaluation.cold_start import ContentMap
    from training.models.ranker import FittedRanker
INPUT, OUTPUT = "item_seq", "user_vec"
ATTRS, ITEM_VEC = "item_attrs", "item_vec"


class _Encoder(torch.nn.Module):
    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.model(item_seq)


def export_onnx(model: RetrievalModel, path: Path) -> None:
    model.eval()
    example = torch.ones((2, model.cfg.max_len), dtype=torch.int64)
    torch.onnx.export(_Encoder(model).eval(), (example,), str(path), input_names=[INPUT],
                      output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch", 1: "seq"}, OUTPUT: {0: "batch"}},
                      opset_version=17, dynamo=False)


def export_step_models(model: SASRec, directory: Path, windows: list[list[int]]) -> float:
    """``prefill.onnx`` and ``step.onnx`` (:mod:`serving.step_encoder`) for a model whose
    positions count from the window's start; returns the largest difference between the
    user vectors the cached steps give (float16 state, as served) and torch's full encode
    of the same windows, each window built up one item at a time (raises above
    ``STEP_ATOL``)."""
    from serving.encoder import make_session
    from serving.step_encoder import (
        OUTPUTS,
        PREFILL,
        PREFILL_INPUTS,
        STEP,
        StepEncoder,
        replay_error,
    )
    from training.models.incremental import Prefill, Step, prefill, step_inputs

    if not model.cfg.causal:
        raise ExportError("a step model needs causal attention: with bidirectional attention "
                          "an added item changes every earlier position")
    model.eval()
    cfg = model.cfg
    seq = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int64)
    with torch.no_grad():
        _, (k, v, sums) = prefill(model, seq)
    torch.onnx.export(Prefill(model).eval(), (seq,), str(directory / PREFILL), input_names=list(PREFILL_INPUTS),
                      output_names=list(OUTPUTS),
                      dynamic_axes={"item_seq": {0: "batch", 1: "seq"}, "user_vec": {0: "batch"},
                                    "new_keys": {1: "batch", 3: "seq"}, "new_values": {1: "batch", 3: "seq"},
                                    "new_sums": {1: "batch"}},
                      opset_version=17, dynamo=False)
    past = seq > 0
    args = (torch.tensor([6, 7]), past.sum(dim=1), past, sums, past.sum(dim=1).to(torch.float32),
            *k.half().unbind(0), *v.half().unbind(0))
    state_axes = {0: "batch", 2: "past"}
    names = step_inputs(cfg.layers)
    axes: dict[str, dict[int, str]] = {name: state_axes for name in names[5:]}
    axes |= {"item": {0: "batch"}, "pos": {0: "batch"}, "past": {0: "batch", 1: "past"},
             "sums": {1: "batch"}, "count": {0: "batch"}, "user_vec": {0: "batch"},
             "new_keys": {1: "batch"}, "new_values": {1: "batch"}, "new_sums": {1: "batch"}}
    torch.onnx.export(Step(model).eval(), args, str(directory / STEP), input_names=names,
                      output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=17, dynamo=False)
    from serving.encoder import Encoder

    enc = StepEncoder(make_session(directory / PREFILL), make_session(directory / STEP), cfg.max_len,
                      1 << 30, Encoder(make_session(directory / "encoder.onnx")), min_len=1)
    cut = [list(model.window.cut(w)) for w in windows if w][:64] or [[1]]

    def torch_vectors(seqs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(seqs)).numpy()

    worst = replay_error(enc, cut, torch_vectors)
    if not np.isfinite(worst) or worst > STEP_ATOL:
        raise ExportError(f"step model: cached steps and the full encoder disagree: max abs diff "
                          f"{worst:.3e} > {STEP_ATOL}")
    return worst


class _ItemTower(torch.nn.Module):
    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_attrs: torch.Tensor) -> torch.Tensor:
        return self.model.content_vectors(item_attrs)


class _ContentMapTower(torch.nn.Module):
    """:class:`training.evaluation.cold_start.ContentMap` as an item tower: the mean of the item's attribute
    rows of ``m``, rescaled to the map's norm (zero for no known attribute)."""

    m: torch.Tensor  # [A + 1, D], a buffer

    def __init__(self, cmap: ContentMap) -> None:
        super().__init__()
        self.register_buffer("m", torch.from_numpy(np.ascontiguousarray(cmap.m, dtype=np.float32)))
        self.norm = float(cmap.norm)

    def forward(self, item_attrs: torch.Tensor) -> torch.Tensor:
        real = (item_attrs > 0).unsqueeze(-1).to(torch.float32)
        mean = (self.m[item_attrs] * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        size = mean.norm(dim=1, keepdim=True)
        return torch.where(size > 0, mean * (self.norm / size.clamp(min=1e-12)), mean)


def export_item_tower(model: RetrievalModel, path: Path) -> float:
    """The attribute part of the item tower as ONNX; returns its max abs difference from
    torch on the catalogue's own attribute rows (raises above tolerance)."""
    model.eval()
    rows = model.item_attrs[1:513]
    with torch.no_grad():
        ref = model.content_vectors(rows).numpy()
    return _export_tower(_ItemTower(model).eval(), rows, ref, path)


def export_content_map(cmap: ContentMap, item_attrs: np.ndarray, path: Path) -> float:
    """A content map (a bundle without a trained tower) as the bundle's item tower; its max
    abs difference from :meth:`ContentMap.vectors` on the catalogue's attribute rows."""
    rows = torch.from_numpy(np.ascontiguousarray(item_attrs[1:513], dtype=np.int64))
    return _export_tower(_ContentMapTower(cmap).eval(), rows, cmap.vectors(rows.numpy()), path)


def _export_tower(module: torch.nn.Module, rows: torch.Tensor, ref: np.ndarray, path: Path) -> float:
    import onnxruntime as ort

    torch.onnx.export(module, (rows[:2].clone(),), str(path), input_names=[ATTRS],
                      output_names=[ITEM_VEC],
                      dynamic_axes={ATTRS: {0: "batch", 1: "attrs"}, ITEM_VEC: {0: "batch"}},
                      opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {ATTRS: rows.numpy()})[0]
    diff = float(np.abs(ref - got).max())
    if not np.isfinite(got).all() or diff > REFERENCE_ATOL:
        raise ExportError(f"item tower: ONNX Runtime and torch disagree: max abs diff {diff:.3e}")
    return diff


def check_parity(model: RetrievalModel, encoder: Encoder, seqs: np.ndarray) -> float:
    """Max abs difference between torch and ONNX Runtime user vectors; raises above tolerance."""
    with torch.no_grad():
        ref = model(torch.from_numpy(seqs)).numpy()
    got = encoder.encode(seqs)
    diff = float(np.abs(ref - got).max())
    if not np.isfinite(got).all() or diff > REFERENCE_ATOL:
        raise ExportError(f"ONNX Runtime and torch disagree: max abs diff {diff:.3e} > {REFERENCE_ATOL}")
    return diff


def make_version(model: RetrievalModel, now: dt.datetime) -> str:
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().numpy().tobytes())
    return f"{now:%Y%m%dT%H%M%SZ}-{h.hexdigest()[:8]}"


def write_bundle(
    model: RetrievalModel,
    vocab: Vocabulary,
    sample_inputs: list[list[int]],
    popular: list[int],
    out: Path,
    *,
    metrics: dict[str, Any],
    dataset: dict[str, Any],
    train_config: dict[str, Any],
    index_type: str = "auto",
    attributes: ItemAttributes | None = None,
    ranker: FittedRanker | None = None,
    content_map: ContentMap | None = None,
) -> Manifest:
    """Export, check parity, and atomically write the bundle directory ``out`` (with the
    item tower and ``attributes`` when the model has one, or ``content_map`` as its item
    tower when it has none, and the ranking stage when given)."""
    import faiss

    from serving.encoder import Encoder, make_session
    from serving.index import build_index, resolve_index_type

    out = Path(out)
    now = dt.datetime.now(dt.UTC)
    version = make_version(model, now)
    tower = model.attr_emb is not None
    if tower and attributes is None:
        raise ExportError("a model with an item tower needs its attributes to be exported")
    if content_map is not None and (tower or attributes is None):
        raise ExportError("a content map is for a model without an item tower, with attributes")
    serving = model.frozen() if tower else model
    extra: dict[str, Any] = {}
    tower_config: dict[str, Any] = {}
    with atomic_directory(out) as tmp:
        export_onnx(serving, tmp / "encoder.onnx")
        seqs = left_pad(sample_inputs[:256] or [[1]], model.cfg.max_len)
        encoder = Encoder(make_session(tmp / "encoder.onnx"))
        parity = check_parity(model, encoder, seqs)
        if isinstance(serving, SASRec) and serving.window.anchored and serving.cfg.causal:
            extra["step_parity_max_abs_diff"] = export_step_models(serving, tmp, sample_inputs[:64])
        if tower:
            assert attributes is not None
            extra["item_tower_parity_max_abs_diff"] = export_item_tower(model, tmp / "item_tower.onnx")
            (tmp / "attributes.json").write_bytes(attributes.to_json(vocab.ids))
        elif content_map is not None:
            assert attributes is not None
            rows = attributes.matrix(vocab.ids, MAX_ATTRS)
            extra["item_tower"] = "content_map"
            extra["item_tower_parity_max_abs_diff"] = export_content_map(content_map, rows,
                                                                         tmp / "item_tower.onnx")
            (tmp / "attributes.json").write_bytes(attributes.to_json(vocab.ids))
            tower_config = {"max_attrs": int(rows.shape[1])}
        items = model.item_vectors()[1:].detach().numpy().astype(np.float32)
        if ranker is not None:
            from training.models.ranker import write_ranker

            extra["ranker"] = write_ranker(ranker, tmp, items)
        kind = resolve_index_type(index_type, len(items))
        index, index_params = build_index(items, kind)
        faiss.write_index(index, str(tmp / "items.faiss"))
        vocab.save(tmp / "vocab.json")
        (tmp / "popular.json").write_bytes(orjson.dumps([int(i) for i in popular]))
        np.savez(tmp / "samples.npz", seqs=seqs[:16], vecs=encoder.encode(seqs[:16]))
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = Manifest(
            version=version, created_at=now.isoformat(timespec="seconds"), model=model.kind,
            model_config={**model.cfg.to_dict(), "train": train_config, **tower_config},
            max_len=model.cfg.max_len, dim=model.cfg.dim, num_items=len(vocab), index_type=kind,
            index_params=index_params,
            signature=Signature(
                inputs=[TensorSpec(INPUT, "int64", ["batch", "seq"])],
                outputs=[TensorSpec(OUTPUT, "float32", ["batch", model.cfg.dim])]),
            metrics={**metrics, "onnx_parity_max_abs_diff": parity, **extra}, dataset=dataset,
            files=files)
        (tmp / MANIFEST).write_bytes(encode_manifest(manifest))
    return manifest
