"""The user simulator, in process: simulated users click on lists from real bundles through
the worker's funnel, under an A/B or team-draft experiment (:mod:`serving.experiments`), and
the online counts and the experiment statistics are those the workers and the report use.

**The users.** Each has a hidden preference with real sequential structure: the
synthetic generator's world (:class:`training.data.synthetic.SyntheticWorld`), so what a
user clicks next depends on what it clicked last. A user starts with a few clicks drawn
from the world, then at each step holds its list (the top ``k`` items of what the funnel
returns for its history), and clicks item ``j`` with probability proportional to

    p(j | last item) × (1 + exposure × 1 / log2(rank(j) + 1))   for j at rank(j) ≤ k
    p(j | last item)                                           for every other item

so the list raises the chance of what it shows, more at the top (position bias), and the
user still clicks outside the list. A better list shows what the user wanted more often,
so its online HR@10 is higher.

**Arms.** ``bundle`` (a bundle directory), or ``popular`` (the bundle's popularity
ranking, the user's seen items left out: a deliberately weak arm).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving import experiments as ex
from serving.bundle import ModelBundle, load_bundle
from serving.experiments import Arm, Experiment, assign, team_draft
from serving.funnel import popular_for, recommend
from serving.list_types import SOURCE_POPULAR, Ranked
from serving.online import OnlineCounts, click_rank
from streamrec.stats import sign_test, two_proportion_test
from training.data.synthetic import SyntheticSpec, SyntheticWorld, world

POPULAR = "popular"


@dataclass(frozen=True)
class SimSpec:
    users: int = 2000
    steps: int = 20  # clicks per user
    warmup: int = 5  # clicks per user drawn from the world before the first list
    top_k: int = 10  # what a user sees of its list
    exposure: float = 3.0
    seed: int = 0
    curve_every: int = 50  # clicks between the points of the p-value curve


@dataclass
class SimResult:
    mode: str
    seed: int
    clicks: dict[str, int] = field(default_factory=dict)  # per arm (ab) or the merged list
    hr10: dict[str, float] = field(default_factory=dict)
    ndcg10: dict[str, float] = field(default_factory=dict)
    wins: dict[str, int] = field(default_factory=dict)  # interleaving
    p_value: float = 1.0  # two-proportion test on HR@10 (ab), sign test (interleave)
    difference: float = 0.0  # HR@10 second − first (ab); win share second − first (interleave)
    seconds: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)  # p-value after each step


class Arms:
    """The lists of each arm for a batch of histories (external ids)."""

    def __init__(self, arms: dict[str, str], top_k: int) -> None:
        self.sources = arms
        self.top_k = top_k
        self.bundles: dict[str, ModelBundle] = {}
        for src in arms.values():
            if src != POPULAR:
                self.bundles[src] = self.bundles.get(src) or load_bundle(Path(src))
        if not self.bundles:
            raise ValueError("at least one arm needs a bundle (popular ranks a bundle's items)")
        self.any = next(iter(self.bundles.values()))

    def lists(self, arm: str, histories: Sequence[Sequence[str]]) -> list[Ranked]:
        src = self.sources[arm]
        if src == POPULAR:
            b = self.any
            return [Ranked(b.vocab.decode(popular_for(b, set(b.vocab.encode(h)), self.top_k)),
                           [math.nan] * self.top_k, SOURCE_POPULAR) for h in histories]
        return recommend(self.bundles[src], histories, self.top_k)


class SimUsers:
    """The simulated users: each one's history (external item ids, the world's item ``i``
    is ``str(i + 1)``) and its next click given the list it sees (the click model above).
    The in-process and the live simulator share them, so a seed draws the same users."""

    def __init__(self, w: SyntheticWorld, spec: SimSpec, prefix: str = "s") -> None:
        self.w, self.spec = w, spec
        self.rng = np.random.default_rng(spec.seed)
        self.bias = 1.0 / np.log2(np.arange(2, spec.top_k + 2))
        self.last = self.rng.choice(len(w.pop), size=spec.users, p=w.pop)
        self.histories: list[list[str]] = [[str(i + 1)] for i in self.last]
        for _ in range(spec.warmup - 1):
            for u in range(spec.users):
                self.last[u] = _draw(self.rng, w, int(self.last[u]), {})
                self.histories[u].append(str(self.last[u] + 1))
        self.ids = [f"{prefix}{u}" for u in range(spec.users)]

    def click(self, u: int, shown: Sequence[str]) -> str:
        """User ``u``'s next click, having seen ``shown`` (its first ``top_k`` count); the
        click joins its history."""
        boost = {int(i) - 1: 1.0 + self.spec.exposure * self.bias[k]
                 for k, i in enumerate(shown[:self.spec.top_k]) if _known(i, len(self.w.pop))}
        nxt = _draw(self.rng, self.w, int(self.last[u]), boost)
        self.last[u] = nxt
        item = str(nxt + 1)
        self.histories[u].append(item)
        return item


def _known(item: str, n: int) -> bool:
    """An item id of the world (a live list may hold others: new items, a blocklist's fill)."""
    return item.isdigit() and 1 <= int(item) <= n


def run(world_spec: SyntheticSpec, arms: dict[str, str], mode: str, spec: SimSpec) -> SimResult:
    """One simulated experiment; ``arms``: name -> bundle directory or ``popular``."""
    t0 = time.perf_counter()
    names = list(arms)
    exp = ex.check(Experiment(f"sim-{spec.seed}", tuple(Arm(n, n, 100 // len(names) +
                                                            (100 % len(names) if i == 0 else 0))
                                                        for i, n in enumerate(names)),
                              mode, salt=f"sim-{spec.seed}"))
    source = Arms(arms, spec.top_k)
    sim = SimUsers(world(world_spec), spec)
    users, histories = sim.ids, sim.histories
    arm_of = [assign(exp, u).name for u in users]
    counts = {a: OnlineCounts() for a in ([ex.INTERLEAVED_ARM] if mode == ex.INTERLEAVE else names)}
    wins = dict.fromkeys(names, 0)
    result = SimResult(mode, spec.seed)
    for step in range(spec.steps):
        per_arm: dict[str, list[Ranked | None]] = {}
        for a in names:
            rows = [u for u in range(spec.users) if mode == ex.INTERLEAVE or arm_of[u] == a]
            full: list[Ranked | None] = [None] * spec.users
            for u, got in zip(rows, source.lists(a, [histories[u] for u in rows]) if rows else [],
                              strict=True):
                full[u] = got
            per_arm[a] = full
        for u in range(spec.users):
            teams: tuple[str, ...] = ()
            if mode == ex.INTERLEAVE:
                pair = {a: per_arm[a][u] for a in names}
                merged = team_draft({a: r for a, r in pair.items() if r is not None},
                                    spec.top_k, f"{exp.key_salt}:{users[u]}:{step}")
                items, teams, arm = merged.ranked.items, merged.teams, ex.INTERLEAVED_ARM
            else:
                arm = arm_of[u]
                r = per_arm[arm][u]
                assert r is not None
                items = r.items[:spec.top_k]
            item = sim.click(u, items)
            rank = click_rank(items, item)
            counts[arm].add(rank)
            if teams and rank is not None:
                wins[teams[rank - 1]] += 1
            done = step * spec.users + u + 1
            if done % spec.curve_every == 0 or done == spec.steps * spec.users:
                result.curve.append({"clicks": done, "p_value": _p(mode, names, counts, wins)})
    for a, c in counts.items():
        ratios = c.ratios()
        result.clicks[a], result.hr10[a] = c.clicks, ratios["hr@10"]
        result.ndcg10[a] = ratios["ndcg@10"]
    result.wins = wins if mode == ex.INTERLEAVE else {}
    result.p_value = result.curve[-1]["p_value"]
    if mode == ex.INTERLEAVE:
        total = max(sum(wins.values()), 1)
        result.difference = (wins[names[1]] - wins[names[0]]) / total
    else:
        result.difference = result.hr10[names[1]] - result.hr10[names[0]]
    result.seconds = time.perf_counter() - t0
    return result


def _p(mode: str, names: list[str], counts: dict[str, OnlineCounts], wins: dict[str, int]) -> float:
    if mode == ex.INTERLEAVE:
        return sign_test(wins[names[0]], wins[names[1]])
    a, b = counts[names[0]], counts[names[1]]
    return two_proportion_test(a.hits[10], a.clicks, b.hits[10], b.clicks).p_value


def _draw(rng: np.random.Generator, w: SyntheticWorld, last: int, boost: dict[int, float]) -> int:
    p = w.next_probabilities(last)
    if boost:
        idx = np.fromiter(boost, dtype=np.int64)
        p[idx] *= np.fromiter(boost.values(), dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def clicks_needed(results: Sequence[SimResult], alpha: float = 0.01) -> float | None:
    """The median (over seeds) of the clicks after which the p-value first fell below
    ``alpha`` and stayed there. A seed that never got there counts as needing more clicks
    than it ran (the median stays defined while fewer than half fall short); None when the
    median itself was not reached."""
    need = [math.inf if (at := clicks_needed_seed(r, alpha)) is None else at for r in results]
    if not need:
        return None
    mid = float(np.median(need))
    return None if math.isinf(mid) else mid


def clicks_needed_seed(r: SimResult, alpha: float = 0.01) -> float | None:
    """The clicks after which ``r``'s p-value first fell below ``alpha`` and stayed there
    to the end of its curve; None when it did not."""
    at = None
    for point in r.curve:
        if point["p_value"] < alpha:
            at = at if at is not None else point["clicks"]
        else:
            at = None
    return at


def as_dict(results: Sequence[SimResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
