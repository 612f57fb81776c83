"""The bundle manifest: what a bundle is, written by training, checked by serving.

A bundle is one directory::

    manifest.json   this file's contents (version, signature, sha256 of every file)
    encoder.onnx    item-index sequence [B, L] int64 -> user vector [B, D] float32
    items.faiss     item embeddings, row r = item index r + 1, inner-product metric
    vocab.json      external item ids, position k = item index k + 1
    popular.json    item indexes by training popularity (fallback list)
    samples.npz     warm-up sequences ``seqs`` [S, L] and reference outputs ``vecs`` [S, D]

and, for a model with an item tower (training.models.retrieval, item attributes):

    item_tower.onnx attribute indexes [B, A] int64 (0 pads) -> item vector [B, D] float32:
                    the attribute part of an item's vector, all a new item has
    attributes.json {"tokens": [attribute token, …] (index = position + 1),
                     "items": {item id: [token, …]}}

and, with a ranking stage (serving.ranking, training.models.ranker):

    ranker.onnx     user [B, D], items [B, K, D], feats [B, K, F] float32 -> scores [B, K]
    ranker.npz      log_pop [N + 1], item_attrs [N + 1, A] (indexes into tokens), tokens [T],
                    and a warm-up sample user/items/feats with its reference scores
"""


from __future__ import annotations

from typing import Any

import msgspec

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
REQUIRED_FILES = ("encoder.onnx", "items.faiss", "vocab.json", "popular.json", "samples.npz")
# The encoder must reproduce ``samples.npz``'s reference outputs within this (max abs
# difference): checked against torch at export and against the file at every load.
REFERENCE_ATOL = 1e-4
# the step model's user vectors (float16 state) against the full encoder's
STEP_ATOL = 5e-2
TOWER_FILES = ("item_tower.onnx", "attributes.json")  # both or neither
RANKER_FILES = ("ranker.onnx", "ranker.npz")  # both or neither
STEP_FILES = ("prefill.onnx", "step.onnx")  # both or neither (serving.step_encoder)


class TensorSpec(msgspec.Struct, frozen=True):
    name: str
    dtype: str  # numpy dtype name: "int64", "float32"
    shape: list[int | str]  # str entries are dynamic axes


class Signature(msgspec.Struct, frozen=True):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int = FORMAT_VERSION
    version: str
    created_at: str  # ISO-8601 UTC
    model: str  # "sasrec", "bpr", "pop", …
    model_config: dict[str, Any]
    max_len: int
    dim: int
    num_items: int
    index_type: str  # "flat_ip", "ivf_ip", "hnsw_ip"
    index_params: dict[str, int] = {}  # ivf: nlist, nprobe; hnsw: m, ef_construction, ef_search
    signature: Signature
    metrics: dict[str, Any]
    dataset: dict[str, Any]
    files: dict[str, str]  # relative path -> sha256 hex


def encode_manifest(m: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(m), indent=2)


def decode_manifest(data: bytes) -> Manifest:
    """Strict decode; raises ``msgspec.ValidationError``/``DecodeError`` with the bad field."""
    return msgspec.json.decode(data, type=Manifest)
