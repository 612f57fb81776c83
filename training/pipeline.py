"""Train -> evaluate -> export, as one call (what ``streamrec train`` runs), and its inputs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serving.manifest import Manifest
from streamrec.errors import ConfigError
from streamrec.session import SessionRules
from streamrec.settings import Settings
from training.config import SEQUENCE_MODELS, load_config, resolve_flags
from training.data.attributes import MAX_ATTRS, ItemAttributes
from training.data.from_topic import encode_negatives, read_impressions, read_topic
from training.data.sequences import SequenceData, Split, item_counts, leave_one_out, load_dataset
from training.data.synthetic import generate
from training.distributed import Distributed
from training.evaluation.cold_start import (
    SLOT_ONLY_LOSS_CAP,
    ContentMap,
    SlotContent,
    attribute_knn_ranks,
    by_target,
    choose_cold,
    choose_min_key,
    choose_within,
    cold_split,
    fit_content_map,
    mapped_vectors,
    slot_parts,
    slot_parts_by_merge,
    vector_ranks,
)
from training.evaluation.evaluate import encode_all, evaluate_vectors, popularity_ranks
from training.evaluation.ranking_metrics import hr_ndcg
from training.export.bundle import write_bundle
from training.models.baselines import BPRConfig, bpr_metrics, popularity_metrics, train_bpr
from training.models.blend import fit_blend
from training.models.ranker import FittedRanker, RankerConfig, fit_ranker
from training.models.retrieval import RetrievalModel, SASRecConfig, TwoTowerConfig
from training.models.train import TrainConfig, TrainResult, torch_encode, train_sasrec

POPULAR_K = 500


def popular_items(counts: np.ndarray, k: int = POPULAR_K) -> list[int]:
    """The bundle's popularity fallback: the ``k`` most clicked item indexes (``counts``
    [N+1] from training), most first, ties by index."""
    return (np.argsort(-counts[1:], kind="stable")[:k] + 1).tolist()


@dataclass(frozen=True)
class TrainReport:
    manifest: Manifest
    bundle: Path
    seconds: float
    epochs: int
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, dict[str, float]]  # {"full": …, "sampled": …}
    popularity_test: dict[str, dict[str, float]]
    ranker: dict[str, Any] | None = None  # the ranking stage's report (training.models.ranker)
    blend: dict[str, Any] | None = None  # the content blend's report (training.models.blend)
    distributed: dict[str, Any] | None = None  # the process group it trained in, if any

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.manifest.model, "version": self.manifest.version, "bundle": str(self.bundle),
                "train_seconds": round(self.seconds, 1), "epochs": self.epochs,
                "best_epoch": self.best_epoch,
                "seconds_per_epoch": round(self.seconds / max(self.epochs, 1), 2),
                "valid": {"full": self.valid}, "test": self.test,
                "popularity_test": self.popularity_test,
                **({"ranker": self.ranker} if self.ranker else {}),
                **({"content_blend": self.blend} if self.blend else {}),
                **({"distributed": self.distributed} if self.distributed else {})}


def tower_inputs(data: SequenceData, attributes: ItemAttributes | None, mcfg: dict[str, Any],
                 model: str = "sasrec") -> tuple[SASRecConfig | TwoTowerConfig, torch.Tensor | None]:
    """The sequence model's configuration (``model``: sasrec or twotower), with an item
    tower over ``attributes`` when given."""
    kind = TwoTowerConfig if model == "twotower" else SASRecConfig
    if attributes is None:
        return kind(num_items=data.num_items, **mcfg), None
    ids = data.vocab.ids
    most = max((len(attributes.of.get(i, ())) for i in ids), default=0)
    if not most:
        raise ConfigError("no item of the data has attributes in the attributes file")
    max_attrs = min(most, MAX_ATTRS)
    matrix = torch.from_numpy(attributes.matrix(ids, max_attrs))
    return kind(num_items=data.num_items, attributes=attributes.size, max_attrs=max_attrs,
                **mcfg), matrix


def fit_sequence_model(data: SequenceData, mcfg: dict[str, Any], tcfg: TrainConfig,
                       progress: bool = True, attributes: ItemAttributes | None = None,
                       tower: bool = True, model_name: str = "sasrec",
                       negatives: list[list[list[int]]] | None = None,
                       ctx: Distributed | None = None, device: torch.device | None = None,
                       ) -> tuple[Split, TrainResult]:
    """The leave-one-out split and the sequence model trained on it (the training half of
    :func:`train_and_export`; what every rank of a distributed run does)."""
    split = leave_one_out(data)
    cfg, item_attrs = tower_inputs(data, attributes if tower else None, mcfg, model_name)
    return split, train_sasrec(split, cfg, tcfg, progress, item_attrs, negatives, ctx=ctx,
                               device=device)


def train_and_export(data: SequenceData, out: Path, mcfg: dict[str, Any], tcfg: TrainConfig,
                     progress: bool = True, index_type: str = "auto",
                     attributes: ItemAttributes | None = None,
                     ranker: RankerConfig | None = None, tower: bool = True,
                     model_name: str = "sasrec", blend: bool = True,
                     negatives: list[list[list[int]]] | None = None,
                     ctx: Distributed | None = None, device: torch.device | None = None,
                     ) -> TrainReport:
    """Train SASRec or the two-tower model (``model_name``) (with an item tower over ``attributes`` unless ``tower`` is off; the
    ranker reads the attributes either way), evaluate, and export the bundle to ``out``. With
    attributes and the tower off, the bundle's item tower is a content map fitted on the
    trained item vectors (:class:`training.evaluation.cold_start.ContentMap`), so new items can be served.
    With attributes and ``blend``, the content blend's weight is chosen on validation
    (:mod:`training.models.blend`). ``ctx``: train data-parallel in a process group
    (:mod:`training.distributed`); only rank 0 calls this, the others
    :func:`fit_sequence_model`. ``device``: where to train (default the CPU)."""
    if ranker is not None and tcfg.refit:
        raise ConfigError("the ranker learns from the validation item, which a refit trains the "
                          "retrieval model on: use --no-refit with --ranker")
    split, result = fit_sequence_model(data, mcfg, tcfg, progress, attributes, tower, model_name,
                                       negatives, ctx, device)
    counts = item_counts(split.train, data.num_items)
    valid = {k: v for k, v in result.valid.items() if "@" in k}
    model = result.model
    inputs = split.inputs("test")
    users = encode_all(torch_encode(model), inputs, model.window)
    test = evaluate_vectors(users, model.item_vectors()[1:].detach().numpy(), inputs,
                            split.targets("test"))
    pop = popularity_metrics(split, "test")
    popular = popular_items(counts)
    t0 = time.monotonic()
    fitted = None if ranker is None else _fit_ranker(model, split, counts, attributes, ranker, progress)
    blended = _fit_blend(model, split, attributes if blend else None, users, tcfg.refit, fitted)
    cmap = None
    if attributes is not None and not tower:  # new items: placed by a map from attributes
        cmap = ContentMap.fit(attributes.matrix(data.vocab.ids, MAX_ATTRS)[1:],
                              model.item_vectors()[1:].detach().numpy(), attributes.size)
    manifest = write_bundle(
        model, data.vocab, inputs, popular, out,
        metrics={"valid": {"full": valid}, "test": test, "popularity_test": pop,
                 "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                 "train_seconds": round(result.seconds, 1),
                 "protocol": "leave-one-out; full = all items, history masked; sampled = 100 "
                             "uniform unseen negatives, seed 0",
                 **({"content_blend": blended} if blended and "beta" in blended else {}),
                 **({"distributed": ctx.describe()} if ctx is not None else {})},
        dataset=data.describe(), train_config=tcfg.to_dict(), index_type=index_type,
        attributes=attributes, ranker=fitted, content_map=cmap)
    return TrainReport(manifest, out, result.seconds + time.monotonic() - t0, result.epochs_run,
                       result.best_epoch, valid, test, pop,
                       None if fitted is None else fitted.report(), blended,
                       None if ctx is None else ctx.describe())


BLEND_CANDIDATES = 200  # the worker's default STREAMREC_CANDIDATES


def _fit_blend(model: RetrievalModel, split: Split, attributes: ItemAttributes | None,
               test_users: np.ndarray, refit: bool, ranker: FittedRanker | None,
               ) -> dict[str, Any] | None:
    """The content blend's report (:mod:`training.models.blend`), chosen on the validation split;
    None without attributes. Not chosen after a refit (the model trained on the validation
    items); never enabled beside an enabled ranker (the ranker runs instead)."""
    if attributes is None:
        return None
    if refit:
        return {"enabled": False, "skipped": "the blend is chosen on the validation split, "
                                             "which a refit trains on: use --no-refit"}
    encode, n = torch_encode(model), model.cfg.max_len
    v_inputs = split.inputs("valid")
    _, report = fit_blend(attributes, split.data.vocab.ids, model.item_vectors()[1:].detach().numpy(),
                          (encode_all(encode, v_inputs, model.window), v_inputs, split.targets("valid")),
                          (test_users, split.inputs("test"), split.targets("test")),
                          BLEND_CANDIDATES, n)
    if ranker is not None and ranker.report().get("enabled"):
        report = {**report, "enabled": False, "disabled_by": "the ranker, enabled in this bundle"}
    return report


def _fit_ranker(model: RetrievalModel, split: Split, counts: np.ndarray, attributes: ItemAttributes | None,
                cfg: RankerConfig, progress: bool) -> FittedRanker:
    """The ranking stage over this retrieval model (:mod:`training.models.ranker`)."""
    encode = torch_encode(model)
    if attributes is not None:
        item_attrs, tokens = attributes.matrix(split.data.vocab.ids, MAX_ATTRS), list(attributes.tokens)
    else:
        item_attrs, tokens = np.zeros((split.data.num_items + 1, 0), dtype=np.int64), []
    return fit_ranker(lambda inputs: encode_all(encode, inputs, model.window),
                      model.item_vectors()[1:].detach().numpy(), split.inputs("valid"),
                      split.targets("valid"), split.inputs("test"), split.targets("test"), counts,
                      item_attrs, tokens, cfg, log=print if progress else None)


def load_training_data(data: Path | None = None, *, synthetic: bool = False,
                       topic: Settings | None = None, since_ms: int | None = None,
                       on_read: Callable[[str], None] | None = None) -> SequenceData:
    """The sequences to train on: a file, generated data, or the clicks topic (``topic``: the
    settings naming it; read with the workers' rules, see :mod:`training.data.from_topic`)."""
    if sum([data is not None, synthetic, topic is not None]) != 1:
        raise ConfigError("give exactly one of --data PATH, --synthetic or --from-topic")
    if synthetic:
        return generate()
    if data is not None:
        return load_dataset(data)
    assert topic is not None
    return load_topic_data(topic, since_ms, on_read=on_read, impressions=False)[0]


def load_topic_data(settings: Settings, since_ms: int | None = None, *, impressions: bool = True,
                    top_k: int = 10, window_ms: int | None = None,
                    on_read: Callable[[str], None] | None = None,
                    ) -> tuple[SequenceData, list[list[list[int]]] | None]:
    """The clicks topic's sequences and, with ``impressions``, each position's impression
    negatives from the impressions topic (:mod:`training.data.from_topic`)."""
    read = asyncio.run(read_topic(settings, settings.clicks_topic, since_ms,
                                  SessionRules.from_settings(settings)))
    if on_read:
        on_read(f"read {read.records} records from {settings.clicks_topic}: {read.invalid} invalid, "
                f"{read.duplicates} duplicate, {len(read.data.users)} users")
    if not impressions:
        return read.data, None
    imps = asyncio.run(read_impressions(settings, settings.impressions_topic, since_ms,
                                        settings.max_event_bytes))
    negs = encode_negatives(read.data, read.clicks, imps, top_k, window_ms)
    if on_read:
        found = sum(1 for u in negs for p in u if p)
        on_read(f"read {imps.records} records from {settings.impressions_topic}: {imps.invalid} "
                f"invalid, {len(imps.written)} lists, {found} clicks with impression negatives")
    return read.data, negs


def run_training(data: SequenceData, out: Path, *, config: Path | None, model: str | None,
                 flags: dict[str, Any], index_type: str = "auto", progress: bool = True,
                 attributes: ItemAttributes | None = None,
                 ranker: RankerConfig | None = None, tower: bool = True,
                 blend: bool = True, negatives: list[list[list[int]]] | None = None,
                 ctx: Distributed | None = None, device: torch.device | None = None,
                 ) -> dict[str, Any]:
    """What ``streamrec train`` does: resolve the configuration (file < flags), then train
    SASRec (with an item tower over ``attributes`` when given) and export its bundle to
    ``out``, or run a baseline (which exports nothing). With ``ctx`` (a sequence model
    only), every rank trains and rank 0 alone evaluates on test and exports; the other
    ranks return ``{"rank": …}``."""
    chosen, mcfg, tcfg, bcfg = resolve_flags(load_config(config), model, flags)
    if chosen not in SEQUENCE_MODELS:
        if ctx is not None or (device is not None and device.type != "cpu"):
            raise ConfigError(f"--distributed and --device train the sequence models "
                              f"({', '.join(SEQUENCE_MODELS)}), not {chosen}")
        return run_baseline(chosen, data, bcfg, progress=progress)
    if ctx is not None and not ctx.is_main:
        fit_sequence_model(data, mcfg, tcfg, False, attributes, tower, chosen, negatives, ctx, device)
        return {"rank": ctx.rank}
    return train_and_export(data, out, mcfg, tcfg, progress=progress, index_type=index_type,
                            attributes=attributes, ranker=ranker, tower=tower,
                            model_name=chosen, blend=blend, negatives=negatives,
                            ctx=ctx, device=device).to_dict()


def run_cold_start(data: SequenceData, attributes: ItemAttributes, *, config: Path | None,
                   flags: dict[str, Any], fraction: float, seed: int, id_only: bool = True,
                   progress: bool = True, tower: bool = True, slot: int = 9,
                   content_weight: float = 0.0) -> dict[str, Any]:
    """The cold-start protocol (:mod:`training.evaluation.cold_start`): SASRec with its item tower, cold
    items embedded from attributes alone, beside ID-only SASRec, attribute k-NN and
    popularity, on cold and on warm test targets (full ranking, test split). Each model
    that places cold items is also scored as served with the new-item slot at ``slot``
    (``*_slot``, :func:`training.evaluation.cold_start.slot_ranks`; -1: not); with ``content_weight`` > 0,
    also with the slot's item chosen by the worker's key (``*_slot_content``,
    :mod:`serving.new_item_slot`) and gated by a minimum key chosen on validation."""
    _, mcfg, tcfg, _ = resolve_flags(load_config(config), "sasrec", flags)
    tcfg = replace(tcfg, refit=False)  # the published protocol: train split only
    cold = choose_cold(data.num_items, fraction, seed)
    split = cold_split(data, cold)
    inputs, targets = split.inputs("test"), split.targets("test")
    report: dict[str, Any] = {
        "protocol": f"cold start: {cold.sum()} of {data.num_items} items ({fraction:.0%}, seed "
                    f"{seed}) removed from every training sequence and input; full ranking over "
                    "all items on the test split; cold items embedded from attributes only",
        "cold_items": int(cold.sum()), "attribute_coverage": attributes.coverage(data.vocab.ids),
        "new_item_slot": slot, "new_item_content_weight": content_weight}
    cfg, item_attrs = tower_inputs(data, attributes, mcfg)
    assert item_attrs is not None
    content = SlotContent(content_weight, item_attrs.numpy()) if content_weight > 0 else None
    if tower:
        result = train_sasrec(split, cfg, tcfg, progress, item_attrs)
        model = result.model
        users = encode_all(torch_encode(model), inputs, model.window)
        with torch.no_grad():
            vecs = model.item_vectors().clone()
            vecs[torch.from_numpy(cold)] = model.content_vectors(item_attrs[torch.from_numpy(cold)])
        report["sasrec_tower"] = {**by_target(vector_ranks(users, vecs[1:].numpy(), inputs, targets),
                                              targets, cold),
                                  "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                                  "train_seconds": round(result.seconds, 1)}
        if slot >= 0:
            _slot_rows(report, "sasrec_tower", users,
                       encode_all(torch_encode(model), split.inputs("valid"), model.window),
                       vecs[1:].numpy(), split, cold, slot, content)
    if id_only:
        plain = train_sasrec(split, SASRecConfig(num_items=data.num_items, **mcfg), tcfg, progress)
        m = plain.model
        u = encode_all(torch_encode(m), inputs, m.window)
        report["sasrec_id_only"] = {
            **by_target(vector_ranks(u, m.item_vectors()[1:].detach().numpy(), inputs, targets),
                        targets, cold),
            "epochs": plain.epochs_run, "best_epoch": plain.best_epoch,
            "train_seconds": round(plain.seconds, 1)}
        # the same ID-only model, cold items placed by a map fitted on the warm items:
        # attributes -> trained vector (ridge; warm items keep their own vectors)
        id_vecs = m.item_vectors()[1:].detach().numpy()
        attrs = item_attrs.numpy()[1:]
        warm = ~cold[1:]
        cmap = fit_content_map(attrs[warm], id_vecs[warm], attributes.size)
        norm = float(np.linalg.norm(id_vecs[warm], axis=1).mean())
        v_u = encode_all(torch_encode(m), split.inputs("valid"), m.window) if slot >= 0 else None
        for name, scale in (("sasrec_id_mapped", None), ("sasrec_id_mapped_norm", norm)):
            mapped = id_vecs.copy()
            mapped[~warm] = mapped_vectors(attrs[~warm], cmap, scale)
            report[name] = by_target(vector_ranks(u, mapped, inputs, targets), targets, cold)
            if v_u is not None:  # the slot's rows (validation users encoded once for both)
                _slot_rows(report, name, u, v_u, mapped, split, cold, slot, content)
    report["attribute_knn"] = by_target(
        attribute_knn_ranks(item_attrs.numpy(), attributes.size, inputs, targets), targets, cold)
    # a stronger k-NN: shared attributes weighted by rarity, as the new-item slot's key weighs them
    rarity = SlotContent(1.0, item_attrs.numpy()).rarity(cold, attributes.size + 1)
    report["attribute_knn_rarity"] = by_target(
        attribute_knn_ranks(item_attrs.numpy(), attributes.size, inputs, targets, rarity),
        targets, cold)
    counts = item_counts(split.train, data.num_items)
    report["popularity"] = by_target(popularity_ranks(counts, inputs, targets), targets, cold)
    return report


def _slot_rows(report: dict[str, Any], name: str, users: np.ndarray, v_users: np.ndarray,
               vecs: np.ndarray, split: Split, cold: np.ndarray, slot: int,
               content: SlotContent | None = None) -> None:
    """``{name}_slot``: the model's test ranks with the new-item slot at ``slot``;
    ``{name}_slot_gated``: the same, gated to users whose best cold item ranks within a
    depth chosen on the validation split (:func:`training.evaluation.cold_start.choose_within`). With
    ``content``: ``{name}_slot_content``, the slot's item chosen by the worker's key, and
    ``{name}_slot_content_gated``, gated by a minimum key chosen on the validation split
    (:func:`training.evaluation.cold_start.choose_min_key`)."""
    inputs, targets = split.inputs("test"), split.targets("test")
    v_inputs, v_targets = split.inputs("valid"), split.targets("valid")  # v_users: their vectors
    # one scoring pass per split and choice; the gates below only redo the rank arithmetic
    test, valid = (slot_parts(users, vecs, inputs, targets, cold),
                   slot_parts(v_users, vecs, v_inputs, v_targets, cold))
    report[f"{name}_slot"] = by_target(test.ranks(slot), targets, cold)
    base = hr_ndcg(vector_ranks(v_users, vecs, v_inputs, v_targets))["ndcg@10"]
    within, table = choose_within(lambda w: hr_ndcg(valid.ranks(slot, w))["ndcg@10"], base, slot)
    report[f"{name}_slot_gated"] = {
        **by_target(test.ranks(slot, within), targets, cold),
        "within": within, "valid_ndcg@10_no_slot": base,
        "valid_ndcg@10_by_within": {str(w): v for w, v in table.items()}}
    if content is None:
        return
    # by key, merged and through the slot only: one scoring pass per split for both
    (test, test_only), (valid, valid_only) = (
        slot_parts_by_merge(users, vecs, inputs, targets, cold, content, keyed=True),
        slot_parts_by_merge(v_users, vecs, v_inputs, v_targets, cold, content, keyed=True))
    report[f"{name}_slot_content"] = {**by_target(test.ranks(slot), targets, cold),
                                      "content_weight": content.weight}
    least, by_key = choose_min_key(lambda k: hr_ndcg(valid.ranks(slot, min_key=k))["ndcg@10"],
                                   base, valid.key)
    report[f"{name}_slot_content_gated"] = {
        **by_target(test.ranks(slot, min_key=least), targets, cold),
        "content_weight": content.weight, "min_key": least, "valid_ndcg@10_no_slot": base,
        "valid_ndcg@10_by_min_key": {str(k): v for k, v in by_key.items()}}
    # new items through the slot only: the rest of each list is the ID-only model's, so the
    # gate is chosen against the ID-only lists (the warm target's reference) on validation
    test, valid = test_only, valid_only
    report[f"{name}_slot_only_content"] = {**by_target(test.ranks(slot), targets, cold),
                                           "content_weight": content.weight}
    id_base = hr_ndcg(valid.ranks(slot, min_key=np.inf))["ndcg@10"]  # nobody shown one
    least, by_key = choose_min_key(lambda k: hr_ndcg(valid.ranks(slot, min_key=k))["ndcg@10"],
                                   id_base, valid.key, cap=SLOT_ONLY_LOSS_CAP)
    report[f"{name}_slot_only_content_gated"] = {
        **by_target(test.ranks(slot, min_key=least), targets, cold),
        "content_weight": content.weight, "min_key": least, "valid_ndcg@10_id_only": id_base,
        "valid_ndcg@10_by_min_key": {str(k): v for k, v in by_key.items()}}


def run_baseline(model: str, data: SequenceData, cfg: BPRConfig, progress: bool = True) -> dict[str, Any]:
    """Most-popular or BPR-MF on the same split and protocols. Baselines export no bundle."""
    split = leave_one_out(data)
    if model == "pop":
        return {"model": "pop", "valid": popularity_metrics(split, "valid"),
                "test": popularity_metrics(split, "test")}
    bpr, valid, best_epoch, seconds = train_bpr(split, cfg, progress)
    return {"model": "bpr", "train_seconds": round(seconds, 1), "best_epoch": best_epoch,
            "valid": {"full": valid}, "test": bpr_metrics(bpr, split, "test")}
