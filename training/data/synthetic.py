"""A seeded synthetic click log with real sequential structure.

Items are split into clusters; each cluster has a fixed item order (a "path",
like episodes of a series or steps of a recipe) and a few favoured successor
clusters. A user starts on a popular item and then, at each step:

* with ``p_next`` continues along the current cluster's path,
* with ``p_jump`` jumps to a favoured successor cluster (popular item there),
* otherwise picks a globally popular item (Zipf-distributed popularity).

So the next item depends strongly on the current one, which a sequence model
can learn and a popularity ranking cannot. Same seed, same data.

:func:`item_attributes` gives each item content that says something about it:
its cluster (what a sequence continues within), one of a few "brands" per
cluster, and a random tag that says nothing (noise the item tower must learn
to ignore).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.sequences import SequenceData, from_id_sequences


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 2000
    items: int = 1000
    clusters: int = 50
    successors: int = 3
    mean_len: int = 20
    min_len: int = 5
    max_len: int = 60
    p_next: float = 0.6
    p_jump: float = 0.25
    zipf: float = 1.1
    seed: int = 7


@dataclass(frozen=True)
class SyntheticWorld:
    """The generator's hidden structure: what a user clicks next after each item (item
    indexes from 0; the data's ids are ``str(index + 1)``)."""

    spec: SyntheticSpec
    cluster_of: np.ndarray
    members: list[np.ndarray]
    position: dict[int, int]
    successors: np.ndarray
    pop: np.ndarray
    cluster_pop: list[np.ndarray]

    @classmethod
    def draw(cls, spec: SyntheticSpec, rng: np.random.Generator) -> SyntheticWorld:
        n, c = spec.items, spec.clusters
        cluster_of = rng.integers(0, c, n)
        members = [rng.permutation(np.flatnonzero(cluster_of == k)) for k in range(c)]
        members = [m if len(m) else rng.integers(0, n, 1) for m in members]
        position = {int(item): p for m in members for p, item in enumerate(m)}
        successors = rng.integers(0, c, (c, spec.successors))
        pop = 1.0 / np.arange(1, n + 1) ** spec.zipf
        pop = pop[rng.permutation(n)]
        pop /= pop.sum()
        cluster_pop = [pop[m] / pop[m].sum() for m in members]
        return cls(spec, cluster_of, members, position, successors, pop, cluster_pop)

    def next_probabilities(self, item: int) -> np.ndarray:
        """The probability of each item being clicked right after ``item``."""
        s, k = self.spec, int(self.cluster_of[item])
        out = (1.0 - s.p_next - s.p_jump) * self.pop
        m = self.members[k]
        out[int(m[(self.position[item] + 1) % len(m)])] += s.p_next
        for k2 in self.successors[k]:
            out[self.members[int(k2)]] += s.p_jump / s.successors * self.cluster_pop[int(k2)]
        return out


def world(spec: SyntheticSpec = SyntheticSpec()) -> SyntheticWorld:
    """The hidden structure of ``generate(spec)``'s data (same seed, same world)."""
    return SyntheticWorld.draw(spec, np.random.default_rng(spec.seed))


def generate(spec: SyntheticSpec = SyntheticSpec()) -> SequenceData:
    rng = np.random.default_rng(spec.seed)
    w = SyntheticWorld.draw(spec, rng)
    n = spec.items
    cluster_of, members, position = w.cluster_of, w.members, w.position
    successors, pop, cluster_pop = w.successors, w.pop, w.cluster_pop

    def step(item: int) -> int:
        k = int(cluster_of[item])
        r = rng.random()
        if r < spec.p_next:
            m = members[k]
            return int(m[(position[item] + 1) % len(m)])
        if r < spec.p_next + spec.p_jump:
            k2 = int(successors[k, rng.integers(spec.successors)])
            return int(rng.choice(members[k2], p=cluster_pop[k2]))
        return int(rng.choice(n, p=pop))

    users, seqs = [], []
    for u in range(spec.users):
        length = int(np.clip(rng.geometric(1.0 / max(1, spec.mean_len - spec.min_len))
                             + spec.min_len - 1, spec.min_len, spec.max_len))
        item = int(rng.choice(n, p=pop))
        seq = [item]
        for _ in range(length - 1):
            item = step(item)
            seq.append(item)
        users.append(str(u + 1))
        seqs.append([str(i + 1) for i in seq])
    return from_id_sequences("synthetic", users, seqs)


def item_attributes(spec: SyntheticSpec = SyntheticSpec(), brands: int = 3,
                    tags: int = 40) -> dict[str, list[str]]:
    """Attribute tokens per item id of :func:`generate` with the same ``spec``."""
    cluster_of = np.random.default_rng(spec.seed).integers(0, spec.clusters, spec.items)
    rng = np.random.default_rng(spec.seed + 1)
    brand = rng.integers(0, brands, spec.items)
    tag = rng.integers(0, tags, spec.items)
    return {str(i + 1): [f"cluster-{cluster_of[i]}", f"brand-{cluster_of[i]}-{brand[i]}",
                         f"tag-{tag[i]}"] for i in range(spec.items)}
