"""The fidelity check: the lists a live worker writes against the same bundle offline.

Chosen users' sequences (up to each user's test point, leave-one-out) are replayed as
clicks through the clicks topic; once every user's list in Redis names the user's last
replayed event, each list is compared with

* the funnel offline (:func:`serving.funnel.recommend`, no rules, the same bundle), and
* the offline evaluator's ranking (exact inner products over the index's vectors,
  history masked: what ``streamrec evaluate`` scores).

Online HR@10 (the held-out item in the Redis list's first 10) and offline HR@10 (the
evaluator's full protocol for the same users) are reported with their difference, and
every differing list gets one cause (:data:`CAUSES`).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STALE = "stale_list"
FALLBACK = "fallback"
SEEN_DEPTH = "seen_filter_depth"
RULE = "rule"
INDEX = "index_approximation"
REORDER = "ranker_or_blend"
TIES = "score_ties"
UNEXPLAINED = "unexplained"
CAUSES = (STALE, FALLBACK, SEEN_DEPTH, RULE, INDEX, REORDER, TIES, UNEXPLAINED)
PLAIN_REASONS = frozenset({"sequence", "popular"})  # what a list with no rule carries
K = 10


@dataclass(frozen=True)
class Online:
    """One user's list as Redis holds it (None fields: no list)."""

    items: list[str]
    source: str
    reasons: list[str] | None
    last_event_id: str


def hit_rate(lists: Sequence[Sequence[str]], targets: Sequence[str], k: int = K) -> float:
    """Share of users whose held-out item is in the first ``k`` of their list."""
    if len(lists) != len(targets):
        raise ValueError(f"{len(lists)} lists for {len(targets)} targets")
    if not lists:
        return 0.0
    return sum(t in list(ls)[:k] for ls, t in zip(lists, targets, strict=True)) / len(lists)


def classify(online: Online | None, expected_event: str, offline: Sequence[str], *,
             truncated: Sequence[str] | None = None, with_rules: Sequence[str] | None = None,
             ) -> str | None:
    """Why the online list differs from the offline funnel's (None: identical).

    ``truncated``: the offline funnel on the history the worker's session keeps (its last
    ``STREAMREC_SESSION_MAX_LEN`` items), where that is shorter than the full prefix;
    ``with_rules``: the offline funnel with the re-rank rules of the settings in force.
    """
    if online is not None and list(online.items) == list(offline):
        return None
    if online is None or online.last_event_id != expected_event:
        return STALE
    if online.source != "model":
        return FALLBACK
    if truncated is not None and list(online.items) == list(truncated):
        return SEEN_DEPTH
    if with_rules is not None and list(online.items) == list(with_rules):
        return RULE
    if online.reasons is not None and set(online.reasons) - PLAIN_REASONS:
        return RULE
    return UNEXPLAINED


def classify_offline(funnel: Sequence[str], evaluator: Sequence[str], *, exact_index: bool,
                     reorders: bool, tied: bool) -> str | None:
    """Why the offline funnel's first ``K`` differ from the evaluator's (None: identical)."""
    if list(funnel[:K]) == list(evaluator[:K]):
        return None
    if reorders:
        return REORDER
    if not exact_index:
        return INDEX
    if tied and set(funnel[:K]) == set(evaluator[:K]):
        return TIES
    return UNEXPLAINED


@dataclass
class FidelityReport:
    users: int
    identical: int
    online_hr10: float
    offline_hr10: float
    funnel_hr10: float
    online_vs_offline_funnel: dict[str, int]  # cause -> users
    funnel_vs_evaluator: dict[str, int]
    differences: list[dict[str, Any]] = field(default_factory=list)
    bundle: str = ""
    seed: int = 0
    session_max_len: int = 0
    replay_s: float = 0.0

    @property
    def identical_share(self) -> float:
        return self.identical / self.users if self.users else 0.0

    @property
    def hr_diff(self) -> float:
        return self.online_hr10 - self.offline_hr10

    def rows(self) -> list[str]:
        out = [(f"users {self.users}  identical lists {self.identical} "
               f"({100 * self.identical_share:.2f}%)"),
               (f"HR@10 online {self.online_hr10:.4f}  offline (evaluator) {self.offline_hr10:.4f}  "
               f"difference {self.hr_diff:+.4f}  (offline funnel {self.funnel_hr10:.4f})")]
        for title, counts in (("online vs offline funnel", self.online_vs_offline_funnel),
                              ("offline funnel vs evaluator", self.funnel_vs_evaluator)):
            shown = ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "none"
            out.append(f"differences, {title}: {shown}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical_share": self.identical_share, "hr10_diff": self.hr_diff}


def pick_users(num_eligible: int, n: int, seed: int) -> list[int]:
    """``n`` of ``range(num_eligible)``, seeded, in order."""
    if n > num_eligible:
        raise ValueError(f"--users {n} is more than the {num_eligible} users with a test point")
    return sorted(random.Random(seed).sample(range(num_eligible), n))


def evaluator_lists(bundle: Any, inputs: Sequence[Sequence[int]], targets: np.ndarray,
                    ) -> tuple[list[list[int]], np.ndarray, list[bool]]:
    """The evaluator's first ``K`` item indexes per user, its full-protocol ranks of the
    targets, and whether a score tie crosses the ``K``-th place."""
    from training.evaluation.evaluate import encode_all, masked_scores
    from training.evaluation.ranking_metrics import ranks_from_scores

    item_vecs = bundle.index.vectors().astype(np.float32)
    users = encode_all(bundle.encoder.encode, inputs, bundle.window)
    tops: list[list[int]] = []
    ranks = np.empty(len(targets), dtype=np.int64)
    tied: list[bool] = []
    for lo, hi, scores in masked_scores(users, item_vecs, inputs):
        ranks[lo:hi] = ranks_from_scores(scores, targets[lo:hi])
        w = min(K + 1, scores.shape[1])
        part = np.argpartition(-scores, w - 1, axis=1)[:, :w]
        for r in range(hi - lo):
            order = part[r][np.argsort(-scores[r, part[r]], kind="stable")]
            order = order[np.isfinite(scores[r, order])]  # PAD and the history are not ranked
            tops.append(order[:K].tolist())
            tied.append(len(order) > K and bool(np.isclose(scores[r, order[K - 1]],
                                                           scores[r, order[K]])))
    return tops, ranks, tied


def run(settings: Any, bundle_path: Path, data_path: Path, n: int, seed: int = 0,
        timeout_s: float = 120.0, on_progress: Callable[[str], None] = lambda _: None,
        ) -> FidelityReport:
    import asyncio

    from serving.bundle import load_bundle
    from serving.funnel import FunnelConfig, recommend
    from serving.reader import RecsReader
    from streamrec.events import ClickEvent, encode_event
    from streams.replay import send_raw
    from training.data.sequences import leave_one_out, load_dataset
    from training.evaluation.bundle import remap

    bundle = load_bundle(bundle_path)
    data = load_dataset(data_path)
    split = leave_one_out(data)
    chosen = pick_users(len(split.eval_users), n, seed)
    rows = [int(split.eval_users[i]) for i in chosen]
    user_ids = [data.users[u] for u in rows]
    prefixes = [data.vocab.decode(data.seqs[u][:-1]) for u in rows]
    targets = [data.vocab.decode([data.seqs[u][-1]])[0] for u in rows]

    # replay: distinct event ids, increasing timestamps, keyed by user id
    run_id = uuid.uuid4().hex[:8]
    now = int(time.time() * 1000)
    records: list[tuple[bytes | None, bytes | None]] = []
    last_event: dict[str, str] = {}
    t = now
    for uid, prefix in zip(user_ids, prefixes, strict=True):
        for k, item in enumerate(prefix):
            eid = f"fid-{run_id}-{uid}-{k}"
            records.append((uid.encode(), encode_event(ClickEvent(eid, uid, item, t))))
            t += 1
            last_event[uid] = eid
    on_progress(f"replaying {len(records)} clicks of {n} users to {settings.clicks_topic}")
    start = time.monotonic()
    asyncio.run(send_raw(settings, settings.clicks_topic, records))
    reader = RecsReader.from_url(settings.redis_url.get_secret_value(), settings.key_prefix,
                                 settings.redis_cluster)
    online: dict[str, Online | None] = {}
    pending = set(user_ids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for uid in list(pending):
            r = reader.get_recommendations(uid)
            if r is not None and r.last_event_id == last_event[uid]:
                online[uid] = Online(r.items, r.source, r.reasons, r.last_event_id)
                pending.discard(uid)
        if pending:
            time.sleep(0.2)
    for uid in pending:  # stale: whatever is there
        r = reader.get_recommendations(uid)
        online[uid] = None if r is None else Online(r.items, r.source, r.reasons, r.last_event_id)
    replay_s = time.monotonic() - start

    top_n = settings.top_n  # the worker's list length
    config = FunnelConfig.from_settings(settings)
    offline = [r.items for r in recommend(bundle, prefixes, top_n, candidates=settings.candidates,
                                          ranking=settings.ranker, blending=settings.content_blend)]
    max_len = settings.session_max_len
    mapped, _ = remap(data, bundle.vocab.ids)
    inputs = [mapped.seqs[u][:-1] for u in rows]
    enc_targets = np.array([(bundle.vocab.index(x) or 0) for x in targets], dtype=np.int64)
    tops, ranks, tied = evaluator_lists(bundle, inputs, enc_targets)
    exact = bundle.index.dense is not None
    reorders = bool(_reorder_stages(bundle, settings))

    by_cause: Counter[str] = Counter()
    by_offline: Counter[str] = Counter()
    differences: list[dict[str, Any]] = []
    identical = 0
    for j, uid in enumerate(user_ids):
        o = online[uid]
        truncated = with_rules = None
        if o is None or o.items != offline[j]:
            if len(prefixes[j]) > max_len:
                truncated = recommend(bundle, [prefixes[j][-max_len:]], top_n,
                                      candidates=settings.candidates, ranking=settings.ranker,
                                      blending=settings.content_blend)[0].items
            if config.rules.active:
                with_rules = recommend(bundle, [prefixes[j][-max_len:]], top_n, rules=config.rules,
                                       candidates=settings.candidates, ranking=settings.ranker,
                                       blending=settings.content_blend)[0].items
        cause = classify(o, last_event[uid], offline[j], truncated=truncated, with_rules=with_rules)
        evaluator_ids = bundle.vocab.decode(tops[j])
        off_cause = classify_offline(offline[j], evaluator_ids, exact_index=exact,
                                     reorders=reorders, tied=tied[j])
        if cause is None:
            identical += 1
        else:
            by_cause[cause] += 1
        if off_cause is not None:
            by_offline[off_cause] += 1
        if cause is not None or off_cause is not None:
            differences.append({
                "user": uid, "online_cause": cause, "offline_cause": off_cause,
                "online": None if o is None else o.items[:K], "offline_funnel": offline[j][:K],
                "evaluator": evaluator_ids, "reasons": None if o is None else o.reasons,
                "history_len": len(prefixes[j])})
    return FidelityReport(
        users=n, identical=identical,
        online_hr10=hit_rate([[] if online[u] is None else online[u].items  # type: ignore[union-attr]
                              for u in user_ids], targets),
        offline_hr10=float((ranks < K).mean()) if n else 0.0,
        funnel_hr10=hit_rate(offline, targets),
        online_vs_offline_funnel=dict(by_cause), funnel_vs_evaluator=dict(by_offline),
        differences=differences, bundle=bundle.version, seed=seed, session_max_len=max_len,
        replay_s=replay_s)


def _reorder_stages(bundle: Any, settings: Any) -> list[object]:
    from serving.funnel import Funnel, FunnelConfig

    f = Funnel(FunnelConfig(ranking=settings.ranker, blending=settings.content_blend))
    return [s for s in f.reorder_stages(bundle) if s is not None]
