"""Online experiments (pure): arms, the assignment hash, team-draft interleaving, the canary
rule, and the experiment record announced on the model-updates topic.

An :class:`Experiment` has two or more :class:`Arm` s; each names a bundle version and,
optionally, funnel settings that differ from the deployment's (the ranker on or off, an
MMR λ). Two modes:

* ``ab``: each user is in one arm, by :func:`bucket`, and gets that arm's list.
* ``interleave`` (two arms): every user gets one list that merges both arms' rankings by
  team draft (:func:`team_draft`); each item is credited to the arm that placed it, and a
  click on it is a win for that arm.

**The assignment hash** (for other services to reproduce)::

    bucket(user) = int.from_bytes(sha256(f"{salt}:{user_id}".encode("utf-8")).digest()[:8], "big") % 10000

The arms take consecutive ranges of the 10,000 buckets in the order they are listed,
``weight`` percent each (weights sum to 100): arm 1 takes buckets ``[0, 100·w1)``, arm 2
``[100·w1, 100·(w1 + w2))``, and so on. The salt is the experiment's (default: its name),
so two experiments split users independently, and one experiment's split is stable.

One experiment runs at a time. Its record is announced on the model-updates topic keyed
``experiment:{name}`` (the topic may be compacted); the last record of each name is its
state, so every worker, a restarted one too, agrees on it (:mod:`streams.hotswap`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from serving.list_types import Ranked
from streamrec.errors import ConfigError
from streamrec.stats import difference_interval

BUCKETS = 10_000
AB, INTERLEAVE = "ab", "interleave"
RUNNING, STOPPED = "running", "stopped"
INTERLEAVED_ARM = "interleaved"  # the arm a team-draft list carries (its items: their team)
KIND = "experiment"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Mode = Literal["auto", "on", "off"]


class Arm(msgspec.Struct, frozen=True, omit_defaults=True):
    """One arm: a bundle version (``uri`` and ``manifest_sha256`` name its directory in the
    store, checked as an announcement's are), its share of users, and funnel overrides."""

    name: str
    version: str
    weight: int = 0  # percent of users (ab); interleaving uses both arms for every user
    uri: str = ""
    manifest_sha256: str = ""
    ranker: Mode | None = None  # None: the deployment's STREAMREC_RANKER
    mmr_lambda: float | None = None  # None: the deployment's STREAMREC_RERANK_MMR_LAMBDA

    def overrides(self) -> str:
        """The funnel settings this arm changes, e.g. ``ranker=off,mmr=0.7`` ('' for none)."""
        parts = ([f"ranker={self.ranker}"] if self.ranker else []) + \
            ([f"mmr={self.mmr_lambda:g}"] if self.mmr_lambda is not None else [])
        return ",".join(parts)


class CanaryPolicy(msgspec.Struct, frozen=True):
    """When a canary is promoted or rolled back (:func:`canary_decision`)."""

    margin: float = 0.01  # HR@10 the canary may lose against control (absolute)
    confidence: float = 0.95
    min_clicks: int = 1_000  # per arm, before any decision
    max_clicks: int = 50_000  # per arm: still undecided then -> rolled back


class Experiment(msgspec.Struct, frozen=True):  # every field encoded: "kind" names the record
    """An experiment's state, as announced. ``state`` running or stopped; ``promoted``: the
    arm promoted when it stopped; ``decision``: the last decision, in words."""

    name: str
    arms: tuple[Arm, ...]
    mode: str = AB
    salt: str = ""
    state: str = RUNNING
    started_at: int = 0
    updated_at: int = 0
    promoted: str = ""
    decision: str = ""
    canary: CanaryPolicy | None = None
    kind: str = KIND

    @property
    def key_salt(self) -> str:
        return self.salt or self.name

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"experiment {self.name!r} has no arm {name!r} "
                          f"(arms: {', '.join(a.name for a in self.arms)})")


def check(exp: Experiment) -> Experiment:
    """``exp`` if it is well formed, else a ConfigError that says what is wrong."""
    if not _NAME.match(exp.name):
        raise ConfigError(f"experiment name {exp.name!r}: use letters, digits, '.', '_', '-' "
                          "(at most 64, starting with a letter or digit)")
    if exp.mode not in (AB, INTERLEAVE):
        raise ConfigError(f"experiment mode {exp.mode!r}: use {AB!r} or {INTERLEAVE!r}")
    names = [a.name for a in exp.arms]
    if len(names) < 2:
        raise ConfigError(f"experiment {exp.name!r} needs at least two arms, has {len(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment {exp.name!r}: arm names must differ ({', '.join(names)})")
    for a in exp.arms:
        if not _NAME.match(a.name) or a.name == INTERLEAVED_ARM:
            raise ConfigError(f"arm name {a.name!r}: use letters, digits, '.', '_', '-' "
                              f"(not {INTERLEAVED_ARM!r})")
        if a.mmr_lambda is not None and not 0.0 <= a.mmr_lambda <= 1.0:
            raise ConfigError(f"arm {a.name!r}: mmr must be in [0, 1], not {a.mmr_lambda}")
    if exp.mode == INTERLEAVE:
        if len(names) != 2:
            raise ConfigError(f"an interleaving experiment has exactly two arms, not {len(names)}")
    else:
        if any(a.weight < 1 for a in exp.arms) or sum(a.weight for a in exp.arms) != 100:
            raise ConfigError(f"experiment {exp.name!r}: each arm needs a weight of at least 1 "
                              f"and the weights must sum to 100 (they are "
                              f"{', '.join(f'{a.name}={a.weight}' for a in exp.arms)})")
    if exp.canary is not None:
        check_policy(exp.canary)
        if len(exp.arms) != 2 or exp.mode != AB:
            raise ConfigError("a canary is an A/B experiment of two arms: control, canary")
    return exp


def check_policy(c: CanaryPolicy) -> CanaryPolicy:
    if not (0 < c.confidence < 1 and c.margin >= 0 and 1 <= c.min_clicks <= c.max_clicks):
        raise ConfigError(f"canary policy (margin {c.margin}, confidence {c.confidence}, "
                          f"min clicks {c.min_clicks}, max clicks {c.max_clicks}): needs "
                          "0 < confidence < 1, margin >= 0 and min clicks <= max clicks")
    return c


def parse_arm(spec: str) -> Arm:
    """``NAME=VERSION[:WEIGHT][:ranker=on|off|auto][:mmr=λ]`` (VERSION ``current``: the
    version announced when the experiment starts)."""
    name, eq, rest = spec.partition("=")
    parts = rest.split(":") if eq else []
    if not name or not parts or not parts[0]:
        raise ConfigError(f"arm {spec!r}: expected NAME=VERSION[:WEIGHT][:ranker=off][:mmr=0.7]")
    version, weight, ranker, mmr = parts[0], 0, None, None
    for p in parts[1:]:
        key, _, value = p.partition("=")
        try:
            if not _:
                weight = int(p)
            elif key == "ranker" and value in ("on", "off", "auto"):
                ranker = value
            elif key == "mmr":
                mmr = float(value)
            else:
                raise ValueError(p)
        except ValueError:
            raise ConfigError(f"arm {spec!r}: cannot read {p!r} (a weight in percent, "
                              "ranker=on|off|auto or mmr=λ)") from None
    return Arm(name, version, weight, ranker=ranker, mmr_lambda=mmr)  # type: ignore[arg-type]


def encode(exp: Experiment) -> bytes:
    return msgspec.json.encode(exp)


def decode(data: bytes) -> Experiment:
    return msgspec.json.decode(data, type=Experiment)


def record_key(name: str) -> bytes:
    """The Kafka key of an experiment's records on the model-updates topic."""
    return f"{KIND}:{name}".encode()


def bucket(salt: str, user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)`` (the documented hash)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(exp: Experiment, user_id: str) -> Arm:
    """The arm of ``user_id`` in an A/B experiment."""
    b, edge = bucket(exp.key_salt, user_id), 0
    for a in exp.arms:
        edge += a.weight * (BUCKETS // 100)
        if b < edge:
            return a
    return exp.arms[-1]


@dataclass(frozen=True, slots=True)
class Interleaved:
    """A team-draft list and, per item, the arm that placed it."""

    ranked: Ranked
    teams: tuple[str, ...]


def team_draft(lists: Mapping[str, Ranked], n: int, seed: str) -> Interleaved:
    """Team-draft interleaving of two arms' lists into one of at most ``n`` items.

    At each turn the arm with fewer items placed so far picks (a coin decides a tie,
    seeded by ``seed``, so the same user and event give the same list); it places its
    best-ranked item not already placed. An arm that runs out leaves the rest to the
    other. Each item keeps its score and reason from the list it came from.
    """
    (name_a, a), (name_b, b) = lists.items()
    coin = random.Random(seed)
    items: list[str] = []
    scores: list[float] = []
    reasons: list[str] = []
    teams: list[str] = []
    placed: set[str] = set()
    pos = {name_a: 0, name_b: 0}
    count = {name_a: 0, name_b: 0}
    source = {name_a: a, name_b: b}

    def head(name: str) -> int | None:
        r, i = source[name], pos[name]
        while i < len(r.items) and r.items[i] in placed:
            i += 1
        pos[name] = i
        return i if i < len(r.items) else None

    while len(items) < n:
        at_a, at_b = head(name_a), head(name_b)
        if at_a is None and at_b is None:
            break
        a_turn = count[name_a] < count[name_b] or (count[name_a] == count[name_b]
                                                   and coin.random() < 0.5)
        if at_b is None or (a_turn and at_a is not None):
            team, r, i = name_a, a, at_a
        else:
            team, r, i = name_b, b, at_b
        assert i is not None
        items.append(r.items[i])
        scores.append(r.scores[i])
        reasons.append(r.reasons[i] if r.reasons else r.source)
        teams.append(team)
        placed.add(r.items[i])
        count[team] += 1
    source_of = a.source if a.source == b.source else f"{a.source}+{b.source}"
    return Interleaved(Ranked(items, scores, source_of, reasons), tuple(teams))


# ---- the canary rule ----

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"


@dataclass(frozen=True)
class Decision:
    action: str  # PROMOTE, ROLLBACK or WAIT
    why: str


def canary_decision(control: tuple[float, float], canary: tuple[float, float],
                    policy: CanaryPolicy) -> Decision:
    """From ``(hits@10, clicks)`` of control and canary: promote when the canary's HR@10
    is not worse than control's by more than ``margin`` (the lower end of the
    ``confidence`` interval of canary − control is above −margin), roll back when it is
    worse by more than ``margin`` (the upper end is below −margin), after at least
    ``min_clicks`` clicks per arm; undecided at ``max_clicks`` per arm: roll back."""
    (kc, nc), (kk, nk) = control, canary
    hr_c, hr_k = kc / max(nc, 1), kk / max(nk, 1)
    seen = f"HR@10 canary {hr_k:.4f} ({int(nk)} clicks) vs control {hr_c:.4f} ({int(nc)} clicks)"
    if min(nc, nk) < policy.min_clicks:
        return Decision(WAIT, f"{seen}: waiting for {policy.min_clicks} clicks per arm")
    low, high = difference_interval(kc, nc, kk, nk, policy.confidence)
    interval = (f"difference {hr_k - hr_c:+.4f}, {policy.confidence:.0%} interval "
                f"[{low:+.4f}, {high:+.4f}], margin {policy.margin:g}")
    if low > -policy.margin:
        return Decision(PROMOTE, f"{seen}: not worse ({interval})")
    if high < -policy.margin:
        return Decision(ROLLBACK, f"{seen}: worse ({interval})")
    if min(nc, nk) >= policy.max_clicks:
        return Decision(ROLLBACK, f"{seen}: undecided after {policy.max_clicks} clicks per arm "
                        f"({interval})")
    return Decision(WAIT, f"{seen}: undecided ({interval})")


def latest(records: Sequence[Experiment]) -> dict[str, Experiment]:
    """Each experiment's last record (its state), in the order first started."""
    out: dict[str, Experiment] = {}
    for e in records:
        out[e.name] = e
    return out


def running(records: Sequence[Experiment]) -> Experiment | None:
    """The running experiment (the last started, should records ever disagree)."""
    live = [e for e in latest(records).values() if e.running]
    return max(live, key=lambda e: e.started_at) if live else None
