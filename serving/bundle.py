"""The immutable :class:`ModelBundle` and its validating loader.

Contract: a bundle is either fully validated or not returned at all. The
loader checks, in order: manifest schema; every file's path stays inside the
bundle and its sha256 matches; the required files exist; the ONNX signature
matches the manifest; the index dimension matches the encoder output and its
size matches the vocabulary; a warm-up inference on the stored samples gives
finite vectors equal to the stored reference outputs. Any failure raises
:class:`~streamrec.errors.BundleRejected` naming the file and the check.

:class:`QualityGate` is the optional check against metrics; an announced
bundle also passes :func:`serving.registry.load_announced` (the directory is
the one announced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import orjson

from serving.content_blend import ContentBlend
from serving.encoder import Encoder, make_session
from serving.index import ItemIndex, configure
from serving.manifest import (
    MANIFEST,
    RANKER_FILES,
    REFERENCE_ATOL,
    REQUIRED_FILES,
    STEP_ATOL,
    STEP_FILES,
    TOWER_FILES,
    Manifest,
    decode_manifest,
)
from serving.ranking import FEATS, FEATURES, ITEMS, SCORES, USER, Ranker, matches_reference
from serving.step_encoder import StepEncoder, replay_error
from serving.tower import ItemTower
from serving.vocab import Vocabulary
from streamrec.errors import BundleRejected
from streamrec.files import sha256_file
from streamrec.sequences import Window

DEFAULT_CACHE_MB = 256.0


@dataclass(frozen=True)
class ModelBundle:
    """Everything one model version needs to serve. Never mutated after load."""

    path: Path
    manifest: Manifest
    encoder: Encoder
    index: ItemIndex
    vocab: Vocabulary
    popular: tuple[int, ...]
    tower: ItemTower | None = None  # with item attributes: embeds new items (serving.tower)
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)  # item -> tokens
    ranker: Ranker | None = None  # the ranking stage (serving.ranking), when trained
    blend: ContentBlend | None = None  # the content blend (serving.content_blend), when trained
    # per-user encoder state (serving.step_encoder): a bundle whose positions count from
    # the window's start, with a cache budget above 0
    step: StepEncoder | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def max_len(self) -> int:
        return self.manifest.max_len

    @property
    def window(self) -> Window:
        """The items of a history the encoder reads (:class:`~streamrec.sequences.Window`)."""
        return Window(self.manifest.max_len, self.manifest.model_config.get("positions") == "start")

    @cached_property
    def attribute_counts(self) -> tuple[Mapping[str, int], int]:
        """How many of the bundle's items have each attribute token, and how many items have
        any: the rarity of an attribute in the new-item slot's overlap (:mod:`serving.new_item_slot`).
        Counted once per bundle."""
        df: dict[str, int] = {}
        n = 0
        for tokens in self.attributes.values():
            if tokens:
                n += 1
                for t in set(tokens):
                    df[t] = df.get(t, 0) + 1
        return df, n


def load_bundle(path: Path | str, threads: int = 1, cache_mb: float = DEFAULT_CACHE_MB) -> ModelBundle:
    """Load and fully validate the bundle at ``path``. Blocking: call off the event loop.
    ``cache_mb``: the step encoder's state budget (0: no step encoder; every event then
    encodes the whole window).

    Raises :class:`BundleRejected` and nothing else: whatever is wrong with the
    files (a missing directory, bad JSON in any file, a truncated archive, an
    unreadable graph), the caller gets one refusal that names the file and check.
    """
    root = Path(path).resolve()
    try:
        return _load(root, threads, cache_mb)
    except BundleRejected:
        raise
    except Exception as e:  # noqa: BLE001 - an unforeseen defect is still a refusal, named
        raise BundleRejected(root.name, "load", f"{type(e).__name__}: {e}") from None


def _load(root: Path, threads: int, cache_mb: float = DEFAULT_CACHE_MB) -> ModelBundle:
    manifest = _read_manifest(root)
    _check_files(root, manifest)
    v = manifest.version
    encoder = _load_encoder(root, manifest, threads)
    index = _load_index(root, manifest)
    vocab = _load_vocab(root, manifest)
    if index.dim != manifest.dim:
        raise BundleRejected(v, "dimension", f"index dim {index.dim} != encoder dim {manifest.dim}",
                             "items.faiss")
    if index.size != len(vocab) or len(vocab) != manifest.num_items:
        raise BundleRejected(v, "size", f"index has {index.size} rows, vocabulary {len(vocab)} "
                             f"items, manifest says {manifest.num_items}", "items.faiss")
    popular = _load_popular(root, manifest, len(vocab))
    _warm_up(root, manifest, encoder)
    step = _load_step(root, manifest, threads, encoder, cache_mb)
    tower, attributes = _load_tower(root, manifest, threads)
    ranker = _load_ranker(root, manifest, threads)
    blend = _load_blend(manifest, vocab, tower, attributes)
    return ModelBundle(root, manifest, encoder, index, vocab, popular, tower, attributes, ranker,
                       blend, step)


def _read_manifest(root: Path) -> Manifest:
    name = root.name
    try:
        return decode_manifest((root / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BundleRejected(name, "manifest", "file missing", MANIFEST) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BundleRejected(name, "manifest", str(e), MANIFEST) from None


def _check_files(root: Path, m: Manifest) -> None:
    for rel in REQUIRED_FILES:
        if rel not in m.files:
            raise BundleRejected(m.version, "files", "not listed in manifest", rel)
    for rel, digest in m.files.items():
        p = (root / rel).resolve()
        if Path(rel).is_absolute() or not p.is_relative_to(root):
            raise BundleRejected(m.version, "path", "escapes the bundle directory", rel)
        if not p.is_file():
            raise BundleRejected(m.version, "files", "missing", rel)
        actual = sha256_file(p)
        if actual != digest:
            raise BundleRejected(m.version, "sha256",
                                 f"mismatch (manifest {digest[:12]}…, file {actual[:12]}…)", rel)


def _load_encoder(root: Path, m: Manifest, threads: int) -> Encoder:
    rel = "encoder.onnx"
    try:
        session = make_session(root / rel, threads)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BundleRejected(m.version, "onnx", f"cannot load: {e}", rel) from None
    got_in = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    got_out = [(o.name, o.type, o.shape) for o in session.get_outputs()]
    want_in = [(s.name, f"tensor({_ort_type(s.dtype)})") for s in m.signature.inputs]
    want_out = [(s.name, f"tensor({_ort_type(s.dtype)})") for s in m.signature.outputs]
    if [g[:2] for g in got_in] != want_in or [g[:2] for g in got_out] != want_out:
        raise BundleRejected(m.version, "signature",
                             f"graph has inputs {got_in} outputs {got_out}, manifest says "
                             f"inputs {want_in} outputs {want_out}", rel)
    out_dim = got_out[0][2][-1]
    if isinstance(out_dim, int) and out_dim != m.dim:
        raise BundleRejected(m.version, "signature", f"output dim {out_dim} != manifest dim {m.dim}",
                             rel)
    return Encoder(session)


def _optional_graph(root: Path, m: Manifest, files: Sequence[str], check: str,
                    threads: int) -> ort.InferenceSession | None:
    """An optional part of a bundle (``files``: its graph first, all listed or none): its
    loaded graph, or None when the manifest lists none of them."""
    listed = [f for f in files if f in m.files]
    if not listed:
        return None
    if len(listed) != len(files):
        raise BundleRejected(m.version, check, f"{listed[0]} without "
                             f"{next(f for f in files if f not in listed)}", listed[0])
    try:
        return make_session(root / files[0], threads)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BundleRejected(m.version, check, f"cannot load: {e}", files[0]) from None


def _load_step(root: Path, m: Manifest, threads: int, encoder: Encoder,
               cache_mb: float) -> StepEncoder | None:
    """The step encoder, when the bundle has one (both graphs listed; only for positions
    counted from the start): each stored sample built up one item at a time through the
    cache must give the full encoder's vectors within ``STEP_ATOL``, or the bundle is
    refused. None when the bundle has none or ``cache_mb`` is 0."""
    prefill = _optional_graph(root, m, STEP_FILES, "step", threads)
    if prefill is None:
        return None
    if m.model_config.get("positions") != "start":
        raise BundleRejected(m.version, "step", "a step model needs positions counted from the "
                             "start (model_config.positions = \"start\")", STEP_FILES[0])
    try:
        step_graph = make_session(root / STEP_FILES[1], threads)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BundleRejected(m.version, "step", f"cannot load: {e}", STEP_FILES[1]) from None
    step = StepEncoder(prefill, step_graph, m.max_len, int(max(cache_mb, 0.0) * 2**20), encoder)
    with np.load(root / "samples.npz", allow_pickle=False) as z:
        windows = [[int(i) for i in row if i > 0] for row in z["seqs"]]
    window = Window(m.max_len, anchored=True)
    windows = [list(window.cut(w)) for w in windows if w]
    probe = StepEncoder(prefill, step_graph, m.max_len, 1 << 30, encoder, min_len=1)
    try:  # one step per item; compared every 16th item and at the ends
        worst = replay_error(probe, windows, encoder.encode, every=16)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BundleRejected(m.version, "step", f"inference failed: {e}", STEP_FILES[1]) from None
    if not np.isfinite(worst) or worst > STEP_ATOL:
        raise BundleRejected(m.version, "step", f"cached steps differ from the encoder by "
                             f"{worst:.2e} (at most {STEP_ATOL})", STEP_FILES[1])
    return step if cache_mb > 0 else None


def _load_tower(root: Path, m: Manifest, threads: int,
                ) -> tuple[ItemTower | None, dict[str, tuple[str, ...]]]:
    """The item tower, when the bundle has one: both files listed, the graph loads, its
    tokens are a JSON list, and it embeds to the bundle's dimension."""
    session = _optional_graph(root, m, TOWER_FILES, "tower", threads)
    if session is None:
        return None, {}
    try:
        data = orjson.loads((root / "attributes.json").read_bytes())
        tokens = data["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("'tokens' is not a list of strings")
        attributes = {str(i): tuple(map(str, ts)) for i, ts in data["items"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise BundleRejected(m.version, "tower", f"bad attributes: {e}", "attributes.json") from None
    tower = ItemTower(session, tokens, int(m.model_config.get("max_attrs", 0)))
    try:
        out = tower.embed([tokens[:2]])
    except Exception as e:  # noqa: BLE001
        raise BundleRejected(m.version, "tower", f"inference failed: {e}", "item_tower.onnx") from None
    if out.shape != (1, m.dim) or not np.isfinite(out).all():
        raise BundleRejected(m.version, "tower", f"output shape {out.shape} or values wrong, "
                             f"expected (1, {m.dim}) finite", "item_tower.onnx")
    return tower, attributes


def _load_blend(m: Manifest, vocab: Vocabulary, tower: ItemTower | None,
                attributes: Mapping[str, Sequence[str]]) -> ContentBlend | None:
    """The content blend, when training chose one (``metrics.content_blend``): its settings
    are valid and the bundle has the attributes it reads."""
    report = m.metrics.get("content_blend")
    if report is None:
        return None
    if not isinstance(report, dict):
        raise BundleRejected(m.version, "content_blend", "metrics.content_blend is not an object",
                             MANIFEST)
    enabled, beta = report.get("enabled"), report.get("beta")
    candidates, max_len = report.get("candidates"), report.get("max_len")
    if not isinstance(enabled, bool) or not isinstance(beta, int | float) or not np.isfinite(beta) \
            or beta < 0 or not isinstance(candidates, int) or candidates < 1 \
            or not isinstance(max_len, int) or max_len < 1:
        raise BundleRejected(m.version, "content_blend", "metrics.content_blend needs enabled (bool), "
                             "beta (finite, >= 0), candidates and max_len (int >= 1)", MANIFEST)
    if tower is None:
        raise BundleRejected(m.version, "content_blend", "metrics.content_blend without the "
                             "item attributes it reads (item_tower.onnx, attributes.json)", MANIFEST)
    return ContentBlend.of_catalogue(tower.index, vocab.ids, attributes, float(beta), candidates,
                                     enabled, max_len)


def _load_ranker(root: Path, m: Manifest, threads: int) -> Ranker | None:
    """The ranking stage, when the bundle has one: both files listed, the graph's signature,
    the side tables' shapes, and a warm-up equal to the stored reference scores."""
    session = _optional_graph(root, m, RANKER_FILES, "ranker", threads)
    if session is None:
        return None
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([USER, ITEMS, FEATS], [SCORES]):
        raise BundleRejected(m.version, "ranker", f"graph has inputs/outputs {names}, expected "
                             f"{[USER, ITEMS, FEATS]} -> {[SCORES]}", "ranker.onnx")
    rel = "ranker.npz"
    try:
        with np.load(root / rel, allow_pickle=False) as z:
            data = {k: z[k] for k in ("log_pop", "item_attrs", "tokens", "user", "items", "feats",
                                      "scores")}
    except Exception as e:  # noqa: BLE001 - zipfile, EOF, a missing key: all a bad archive
        raise BundleRejected(m.version, "ranker", f"cannot read: {type(e).__name__}: {e}", rel) from None
    n, tokens = m.num_items + 1, data["tokens"]
    attrs = data["item_attrs"]
    if data["log_pop"].shape != (n,) or not np.isfinite(data["log_pop"]).all() or attrs.ndim != 2 \
            or attrs.shape[0] != n or tokens.ndim != 1 or (attrs < 0).any() \
            or (attrs > len(tokens)).any():
        raise BundleRejected(m.version, "ranker", f"side tables do not fit {m.num_items} items: "
                             f"log_pop {data['log_pop'].shape}, item_attrs {attrs.shape}, "
                             f"{len(tokens)} tokens", rel)
    if data["feats"].ndim != 3 or data["feats"].shape[-1] != len(FEATURES):
        raise BundleRejected(m.version, "ranker", f"sample features have shape {data['feats'].shape}, "
                             f"expected [B, K, {len(FEATURES)}]", rel)
    report = m.metrics.get("ranker") or {}
    enabled, candidates = report.get("enabled"), report.get("candidates")
    if not isinstance(enabled, bool) or not isinstance(candidates, int) or candidates < 1:
        raise BundleRejected(m.version, "ranker", "metrics.ranker.enabled (bool) or .candidates "
                             "(int >= 1) is missing", MANIFEST)
    ranker = Ranker(session, data["log_pop"], attrs, [str(t) for t in tokens], enabled, candidates)
    try:
        out = ranker.run(data["user"], data["items"], data["feats"])
    except Exception as e:  # noqa: BLE001
        raise BundleRejected(m.version, "ranker", f"inference failed: {e}", "ranker.onnx") from None
    if not matches_reference(out, data["scores"]):
        raise BundleRejected(m.version, "ranker", "warm-up scores differ from the reference",
                             "ranker.onnx")
    return ranker


def _ort_type(dtype: str) -> str:
    return {"float32": "float", "float64": "double"}.get(dtype, dtype)


def _load_index(root: Path, m: Manifest) -> ItemIndex:
    try:
        index = ItemIndex.load(root / "items.faiss")
    except RuntimeError as e:
        raise BundleRejected(m.version, "index", f"cannot read: {e}", "items.faiss") from None
    if not configure(index.index, m.index_type, m.index_params):
        raise BundleRejected(m.version, "index", f"file is a {type(index.index).__name__}, manifest "
                             f"says {m.index_type}", "items.faiss")
    return index


def _load_vocab(root: Path, m: Manifest) -> Vocabulary:
    try:
        return Vocabulary.load(root / "vocab.json")
    except (orjson.JSONDecodeError, ValueError) as e:
        raise BundleRejected(m.version, "vocab", str(e), "vocab.json") from None


def _load_popular(root: Path, m: Manifest, n_items: int) -> tuple[int, ...]:
    try:
        data = orjson.loads((root / "popular.json").read_bytes())
    except (orjson.JSONDecodeError, OSError) as e:
        raise BundleRejected(m.version, "popular", f"cannot read: {e}", "popular.json") from None
    if not isinstance(data, list) or not all(isinstance(i, int) and 1 <= i <= n_items for i in data):
        raise BundleRejected(m.version, "popular", f"expected item indexes in 1..{n_items}",
                             "popular.json")
    return tuple(data)


def _warm_up(root: Path, m: Manifest, encoder: Encoder) -> None:
    rel = "samples.npz"
    try:
        with np.load(root / rel, allow_pickle=False) as z:
            seqs, ref = z["seqs"].astype(np.int64), z["vecs"]
    except Exception as e:  # noqa: BLE001 - zipfile, EOF, format errors: all a bad archive
        raise BundleRejected(m.version, "samples", f"cannot read: {type(e).__name__}: {e}",
                             rel) from None
    if seqs.ndim != 2 or seqs.shape[1] != m.max_len or (seqs < 0).any() or (seqs > m.num_items).any():
        raise BundleRejected(m.version, "samples", f"bad sample sequences, shape {seqs.shape}", rel)
    try:
        out = encoder.encode(seqs)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise BundleRejected(m.version, "warm-up", f"inference failed: {e}", "encoder.onnx") from None
    if out.shape != (len(seqs), m.dim):
        raise BundleRejected(m.version, "warm-up", f"output shape {out.shape}, expected "
                             f"({len(seqs)}, {m.dim})", "encoder.onnx")
    if not np.isfinite(out).all():
        raise BundleRejected(m.version, "warm-up", "non-finite outputs (NaN/inf)", "encoder.onnx")
    if ref.shape != out.shape:
        raise BundleRejected(m.version, "samples", f"reference outputs have shape {ref.shape}, "
                             f"the encoder gives {out.shape}", rel)
    diff = float(np.abs(out - ref).max())
    if diff > REFERENCE_ATOL:
        raise BundleRejected(m.version, "warm-up", f"outputs differ from reference by {diff:.2e}",
                             "encoder.onnx")


@dataclass(frozen=True)
class QualityGate:
    """Optional floor on validation NDCG@10, and max drop versus the current bundle."""

    min_valid_ndcg: float | None = None
    max_ndcg_drop: float | None = None

    def check(self, new: ModelBundle, current: ModelBundle | None) -> None:
        score = valid_ndcg(new)
        if self.min_valid_ndcg is not None and (score is None or score < self.min_valid_ndcg):
            raise BundleRejected(new.version, "quality", f"validation NDCG@10 {score} is below the "
                                 f"floor {self.min_valid_ndcg}", MANIFEST)
        cur = valid_ndcg(current) if current else None
        if self.max_ndcg_drop is not None and cur is not None and score is not None \
                and score < cur - self.max_ndcg_drop:
            raise BundleRejected(new.version, "quality", f"validation NDCG@10 {score:.4f} is more "
                                 f"than {self.max_ndcg_drop} below the current {cur:.4f}", MANIFEST)


def valid_ndcg(bundle: ModelBundle) -> float | None:
    try:
        return float(bundle.manifest.metrics["valid"]["full"]["ndcg@10"])
    except (KeyError, TypeError, ValueError):
        return None
