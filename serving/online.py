"""Online metrics: did the list a user held predict the user's next click? (pure)

For every applied click, the worker takes the list it last wrote for that user
(before the click's batch) and finds the clicked item's rank in it. Summed per
model version and experiment arm, these give the online counterparts of the
offline metrics:

* ``HR@k`` (k = 1, 5, 10, 20): the share of clicks whose item was in the first k
  items of the list the user held: ``hits[k] / clicks``;
* ``MRR``: the mean reciprocal rank of the clicked item (0 when not in the list):
  ``reciprocal_rank / clicks``;
* ``NDCG@10``: the mean of ``1 / log2(rank + 1)`` for ranks up to 10 (one relevant
  item, so the ideal DCG is 1): ``ndcg10 / clicks``;
* the share of clicks on any recommended item: ``on_list / clicks``;
* the share of clicks attributed to the list held (the click names its ``list_id``):
  ``attributed / clicks``;
* coverage: the distinct items in the lists written since the model version was
  first served, over the bundle's item count;
* in a team-draft interleaving experiment (:mod:`serving.experiments`), each click on an
  item of the list is a win for the arm that placed the item (``wins``).

The clicks on an experiment's lists are also returned per batch (:class:`Observed`), so
the worker adds them to the experiment's counts in Redis, which every worker shares and
``streamrec experiment report`` reads.

A click counts only where the worker knows the user's previous list: the last
``max_users`` users' lists are kept in memory (least recently written dropped
first). A user seen first after a restart or a rebalance has no known list; such
clicks are counted apart (``without_list``) and enter no ratio. A list is the one
written, not necessarily the one an application displayed (impressions report
that).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

KS = (1, 5, 10, 20)
NDCG_K = 10
DEFAULT_ARM = "all"  # the arm of every user while no experiment runs


def click_rank(items: Sequence[str], item: str) -> int | None:
    """The 1-based rank of ``item`` in ``items``, None where it is not there."""
    try:
        return items.index(item) + 1
    except ValueError:
        return None


@dataclass
class OnlineCounts:
    """Sums over the clicks of one (model version, arm); the ratios divide by ``clicks``."""

    clicks: int = 0
    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    on_list: int = 0
    reciprocal_rank: float = 0.0
    ndcg10: float = 0.0
    ndcg10_sq: float = 0.0  # sum of squares: the variance of NDCG@10 (experiment intervals)
    attributed: int = 0

    def add(self, rank: int | None, attributed: bool = False) -> None:
        self.clicks += 1
        self.attributed += attributed
        if rank is None:
            return
        self.on_list += 1
        self.reciprocal_rank += 1.0 / rank
        if rank <= NDCG_K:
            gain = 1.0 / math.log2(rank + 1)
            self.ndcg10 += gain
            self.ndcg10_sq += gain * gain
        for k in KS:
            if rank <= k:
                self.hits[k] += 1

    def ratios(self) -> dict[str, float]:
        """``hr@k``, ``mrr``, ``ndcg@10`` and ``on_list`` as shares of the clicks (0 with none)."""
        n = max(self.clicks, 1)
        out = {f"hr@{k}": self.hits[k] / n for k in KS}
        return {**out, "mrr": self.reciprocal_rank / n, "ndcg@10": self.ndcg10 / n,
                "on_list": self.on_list / n, "attributed": self.attributed / n}

    def fields(self) -> dict[str, float]:
        """The sums by name (what an experiment's Redis hash holds per arm)."""
        return {"clicks": self.clicks, **{f"hits@{k}": self.hits[k] for k in KS},
                "on_list": self.on_list, "rr": self.reciprocal_rank, "ndcg10": self.ndcg10,
                "ndcg10_sq": self.ndcg10_sq, "attributed": self.attributed}

    @classmethod
    def from_fields(cls, f: dict[str, float]) -> OnlineCounts:
        return cls(clicks=int(f.get("clicks", 0)),
                   hits={k: int(f.get(f"hits@{k}", 0)) for k in KS},
                   on_list=int(f.get("on_list", 0)), reciprocal_rank=f.get("rr", 0.0),
                   ndcg10=f.get("ndcg10", 0.0), ndcg10_sq=f.get("ndcg10_sq", 0.0),
                   attributed=int(f.get("attributed", 0)))


@dataclass(frozen=True, slots=True)
class Shown:
    """A list as written: its items, the model version and the arm that made it; in an
    experiment, its name, and for a team-draft list each item's team (the arm that placed
    it)."""

    items: tuple[str, ...]
    model_version: str
    arm: str
    list_id: str | None = None
    experiment: str = ""
    teams: tuple[str, ...] = ()


@dataclass
class Observed:
    """One batch's clicks on experiment lists: sums per (experiment, arm of the list), and
    team-draft wins per (experiment, team)."""

    arms: dict[tuple[str, str], OnlineCounts] = field(default_factory=dict)
    wins: dict[tuple[str, str], int] = field(default_factory=dict)


class OnlineMetrics:
    """The users' last written lists (LRU, ``max_users``) and the counts of their clicks."""

    def __init__(self, max_users: int = 100_000) -> None:
        self.max_users = max_users
        self.lists: OrderedDict[str, Shown] = OrderedDict()
        self.counts: dict[tuple[str, str], OnlineCounts] = {}
        self.wins: dict[tuple[str, str], int] = {}  # (experiment, team) -> clicks it won
        self.without_list = 0
        self.recommended: dict[str, set[str]] = {}  # model version -> items in its lists

    def observe(self, clicks: Iterable[tuple[str, str, str | None]]) -> Observed:
        """``(user, item, list_id)`` clicks, each against the list the user held before it
        (``list_id``: the list the click names, or None); returns what the clicks on
        experiment lists added (the worker adds it to the experiment's counts in Redis)."""
        lists, counts = self.lists, self.counts
        batch = Observed()
        for user, item, named in clicks:
            shown = lists.get(user)
            if shown is None:
                self.without_list += 1
                continue
            key = (shown.model_version, shown.arm)
            c = counts.get(key)
            if c is None:
                c = counts[key] = OnlineCounts()
            rank = click_rank(shown.items, item)
            attributed = named is not None and named == shown.list_id
            c.add(rank, attributed)
            if shown.experiment:
                arm = (shown.experiment, shown.arm)
                d = batch.arms.get(arm)
                if d is None:
                    d = batch.arms[arm] = OnlineCounts()
                d.add(rank, attributed)
                if shown.teams and rank is not None:
                    won = (shown.experiment, shown.teams[rank - 1])
                    batch.wins[won] = batch.wins.get(won, 0) + 1
                    self.wins[won] = self.wins.get(won, 0) + 1
        return batch

    def remember(self, lists: Iterable[tuple[str, Sequence[str], str | None]],
                 model_version: str, arm: str = DEFAULT_ARM) -> None:
        """The lists just written, ``(user, items, list_id)``; the oldest users beyond
        ``max_users`` are forgotten."""
        self.remember_shown((user, Shown(tuple(items), model_version, arm, list_id))
                            for user, items, list_id in lists)

    def remember_shown(self, lists: Iterable[tuple[str, Shown]]) -> None:
        """The lists just written, as ``(user, Shown)``."""
        held, recommended = self.lists, self.recommended
        for user, shown in lists:
            held[user] = shown
            held.move_to_end(user)
            seen = recommended.get(shown.model_version)
            if seen is None:
                seen = recommended[shown.model_version] = set()
            seen.update(shown.items)
        while len(held) > self.max_users:
            held.popitem(last=False)

    def displayed(self, user: str, list_id: str, shown: Sequence[str]) -> bool:
        """An application's report that it displayed ``shown`` of list ``list_id``: where
        that is the list the user holds, the held list becomes the displayed items that
        were in it, in the displayed order (each keeping its team), so the user's next
        click is judged against what was shown. Returns whether it matched."""
        held = self.lists.get(user)
        if held is None or held.list_id != list_id:
            return False
        team = dict(zip(held.items, held.teams, strict=True)) if held.teams else None
        items = tuple(dict.fromkeys(i for i in shown if i in set(held.items)))
        self.lists[user] = Shown(items, held.model_version, held.arm, held.list_id,
                                 held.experiment, tuple(team[i] for i in items) if team else ())
        return True

    def coverage(self, model_version: str, catalogue_size: int) -> float:
        """Distinct items in ``model_version``'s lists over ``catalogue_size`` items."""
        return len(self.recommended.get(model_version, ())) / max(catalogue_size, 1)


PREFIX = "streamrec_online_"
# The exported sums, each a counter labelled by model version and arm: its name after
# PREFIX -> (its help, the OnlineCounts field). One table for the worker's collector
# (streams.prometheus) and for reading them back (from_prometheus).
COUNTERS = {
    "clicks": ("Applied clicks by users whose previous list this worker wrote", "clicks"),
    "clicks_on_list": ("Clicks on any item of the user's previous list", "on_list"),
    "reciprocal_rank": (("Sum over clicks of 1/rank of the clicked item (0 off the list): "
                         "/ clicks = MRR"), "reciprocal_rank"),
    "ndcg_at_10": ("Sum over clicks of 1/log2(rank+1) for ranks <= 10: / clicks = NDCG@10",
                   "ndcg10"),
    "ndcg_at_10_squares": ("Sum over clicks of the square of that gain (its variance)",
                           "ndcg10_sq"),
    "clicks_attributed": ("Clicks that name the list_id of the list the user held", "attributed"),
}
HITS = "hits"  # also labelled by k
WITHOUT_LIST = "clicks_without_list"  # unlabelled
COVERAGE = "coverage_ratio"  # a gauge, labelled by model version
WINS = "interleave_wins"  # labelled by experiment and arm (the team)


def from_prometheus(text: str) -> dict[str, dict[str, float]]:
    """A worker's online metrics from its ``/metrics`` text: ``"{model_version}/{arm}"`` ->
    ``clicks`` and the ratios of :meth:`OnlineCounts.ratios`, plus ``without_list``."""
    from prometheus_client.parser import text_string_to_metric_families

    by: dict[str, OnlineCounts] = {}
    without = 0.0
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            what = sample.name.removeprefix(PREFIX).removesuffix("_total")
            if what == WITHOUT_LIST:
                without = sample.value
                continue
            labels = sample.labels
            if "model_version" not in labels or not sample.name.endswith("_total"):
                continue
            c = by.setdefault(f"{labels['model_version']}/{labels.get('arm', DEFAULT_ARM)}",
                              OnlineCounts())
            if what == HITS:
                c.hits[int(labels["k"])] = int(sample.value)
            elif what in COUNTERS:
                attr = COUNTERS[what][1]
                setattr(c, attr, type(getattr(c, attr))(sample.value))  # int counts stay int
    out: dict[str, dict[str, float]] = {k: {"clicks": c.clicks, **c.ratios()} for k, c in by.items()}
    if without:
        out["without_list"] = {"clicks": without}
    return out
