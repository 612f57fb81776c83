"""The live item catalogue: items added and withdrawn since the bundle was trained.

Fed by the ``items`` topic (:mod:`streamrec.items`; the worker's listener is
:mod:`streams.catalogue`). :class:`Catalogue` keeps the latest record of every
item (the topic's state, independent of any model) and, for the bundle being
served, a :class:`CatalogueView` snapshot that retrieval reads:

* **new items** (not in the bundle's vocabulary) with the vectors the bundle's
  item tower gives their attributes: retrieved beside the bundle's index, in the
  same space, for any user, at once; and, as history, read by the encoder
  through their **proxy**: the bundle item whose vector is nearest (largest
  inner product) to theirs, since the encoder's input is bundle item indexes;
* **withdrawn items** (``"available": false``): never in a list written after.

A snapshot is immutable and replaced in one assignment, so a batch computes
against one consistent view. A new bundle rebuilds it (:meth:`Catalogue.rebuild`):
its tower re-embeds every item it does not know, and items it was trained on
leave the "new" set (the tower may be a trained one or a content map fitted on an
ID-only model's vectors, ``training.evaluation.cold_start.ContentMap``). A bundle without a tower cannot
embed new items; they are counted (``unembedded``) and not retrieved until one with a
tower is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from serving.bundle import ModelBundle
from serving.new_item_slot import item_columns, rarity_weights
from streamrec.items import ItemRecord


@dataclass(frozen=True)
class CatalogueView:
    """What the catalogue adds to the bundle ``version``: new items and their vectors
    (row r of ``vecs`` is ``ids[r]``), withdrawn bundle item indexes, withdrawn ids."""

    version: str = ""
    ids: tuple[str, ...] = ()
    vecs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    blocked: frozenset[int] = frozenset()
    blocked_ids: frozenset[str] = frozenset()
    unembedded: int = 0  # new items the bundle cannot embed (no tower, no known attribute)
    # every available item with a record: its attributes and its record's time (epoch ms)
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    stamped_ms: Mapping[str, int] = field(default_factory=dict)
    # new item id -> the bundle item index the encoder reads in its place in a history
    proxies: Mapping[str, int] = field(default_factory=dict)
    # the bundle's items per attribute token, and its items with attributes (a token's rarity)
    token_counts: Mapping[str, int] = field(default_factory=dict)
    catalogue: int = 0

    @property
    def size(self) -> int:
        return len(self.ids)

    @cached_property
    def rows(self) -> Mapping[str, int]:
        """New item id -> its row in ``ids`` and ``vecs`` (built once per snapshot, not per
        batch)."""
        return {i: p for p, i in enumerate(self.ids)}

    @cached_property
    def content(self) -> tuple[Mapping[str, int], np.ndarray]:
        """The new items' attribute tokens as columns, for the new-item slot's content weight
        (:mod:`serving.new_item_slot`): token -> column, and [n, T] ``item_columns`` weighted by
        each token's rarity in the bundle's catalogue. Built once per snapshot."""
        columns: dict[str, int] = {}
        per_item = [[columns.setdefault(t, len(columns)) for t in self.attributes.get(i, ())]
                    for i in self.ids]
        counts = self.token_counts.get
        df = np.array([counts(t, 0) for t in columns], dtype=np.int64)
        return columns, item_columns(per_item, len(columns), rarity_weights(df, self.catalogue))

    @cached_property
    def columns_of(self) -> dict[str, tuple[int, ...]]:
        """Item id -> its attribute tokens' columns in ``content`` (those of new items' tokens
        only), filled as histories meet items: a cache for this snapshot."""
        return {}


EMPTY = CatalogueView()


class Catalogue:
    """Every item's latest record, and the snapshot for the bundle being served."""

    def __init__(self) -> None:
        self.records: dict[str, ItemRecord] = {}
        self.live = EMPTY
        self._vecs: dict[str, np.ndarray] = {}  # new item id -> vector, for live.version
        self._proxies: dict[str, int] = {}  # new item id -> nearest bundle item index
        self.generation = 0  # counts applied record batches (the other bundles' views)
        self._others: dict[str, tuple[int, CatalogueView]] = {}  # version -> (generation, view)

    def view_for(self, bundle: ModelBundle) -> CatalogueView:
        """The snapshot for ``bundle``: ``live`` for the served one; for another bundle (an
        experiment's arm), a snapshot of the same records built for it, kept until the
        records change."""
        if bundle.version == self.live.version:
            return self.live
        held = self._others.get(bundle.version)
        if held is not None and held[0] == self.generation:
            return held[1]
        other = Catalogue()
        other.records = self.records
        view = other.rebuild(bundle)
        self._others = {v: h for v, h in self._others.items() if h[0] == self.generation}
        self._others[bundle.version] = (self.generation, view)
        return view

    def apply(self, records: Sequence[ItemRecord], bundle: ModelBundle | None) -> CatalogueView:
        """Take ``records`` (in log order: the later record of an item wins) and return the
        new snapshot for ``bundle`` (None: none served yet; only the records are kept)."""
        for r in records:
            self.records[r.item_id] = r
        if records:
            self.generation += 1
        if bundle is None:
            return self.live
        if bundle.version != self.live.version:
            return self.rebuild(bundle)
        changed = {r.item_id: self.records[r.item_id] for r in records}
        self._embed(bundle, [r for r in changed.values() if r.available])
        for r in changed.values():
            if not r.available:
                self._vecs.pop(r.item_id, None)
                self._proxies.pop(r.item_id, None)
        return self._publish(bundle)

    def rebuild(self, bundle: ModelBundle) -> CatalogueView:
        """The snapshot for a newly served ``bundle``: every new item embedded by its tower."""
        self._vecs, self._proxies = {}, {}
        self.live = CatalogueView(version=bundle.version)
        self._embed(bundle, [r for r in self.records.values() if r.available])
        return self._publish(bundle)

    def _embed(self, bundle: ModelBundle, records: Sequence[ItemRecord]) -> None:
        new = [r for r in records if bundle.vocab.index(r.item_id) is None]
        tower = bundle.tower
        if tower is None:
            return
        usable = [r for r in new if tower.known(r.attributes)]
        if usable:
            vecs = tower.embed([r.attributes for r in usable])
            _, nearest = bundle.index.search(vecs, 1)  # item indexes, PAD (0) if none
            for r, v, p in zip(usable, vecs, nearest[:, 0].tolist(), strict=True):
                self._vecs[r.item_id] = v
                if p:
                    self._proxies[r.item_id] = int(p)

    def _publish(self, bundle: ModelBundle) -> CatalogueView:
        withdrawn = frozenset(i for i, r in self.records.items() if not r.available)
        blocked = frozenset(ix for i in withdrawn if (ix := bundle.vocab.index(i)) is not None)
        ids = tuple(self._vecs)
        vecs = (np.stack([self._vecs[i] for i in ids]) if ids
                else np.zeros((0, bundle.manifest.dim), dtype=np.float32))
        unembedded = sum(1 for i, r in self.records.items() if r.available and i not in self._vecs
                         and bundle.vocab.index(i) is None)
        available = [r for r in self.records.values() if r.available]
        self.live = CatalogueView(bundle.version, ids, vecs, blocked, withdrawn, unembedded,
                              {r.item_id: tuple(r.attributes) for r in available},
                              {r.item_id: r.ts for r in available},
                              {i: self._proxies[i] for i in ids if i in self._proxies},
                              *bundle.attribute_counts)
        return self.live
