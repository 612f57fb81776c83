"""Starting, reporting and stopping experiments, and the canary controller.

What the ``experiment`` and ``canary`` commands and ``publish --canary`` run. An
experiment's state lives on the model-updates topic (:mod:`serving.experiments`);
its counts live in Redis (``{prefix}experiment:{name}``, added by every worker per
batch), so the report reads what the whole fleet counted and survives a worker's
restart.

**The canary.** ``publish --canary P`` puts a bundle through the offline checks (it
loads, and passes the quality gate against the current version), copies it into
the store, and starts experiment ``canary-{version}`` with arms ``control`` (the
current version, 100 − P %) and ``canary`` (P %), carrying the
:class:`~serving.experiments.CanaryPolicy`. :func:`canary_step` (``streamrec canary
watch``, a job) applies :func:`~serving.experiments.canary_decision` to the counts:
a promotion announces the canary's version as the fleet's and stops the experiment;
a rollback stops it, and the fleet keeps the current version. Every decision is
logged and announced in the experiment's record (``decision``), which
``streamrec models`` shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from serving import experiments as ex
from serving.bundle import QualityGate, load_bundle
from serving.experiments import Arm, CanaryPolicy, Decision, Experiment
from serving.keys import experiment_key, meta_prefix
from serving.online import KS, OnlineCounts
from serving.redis_client import sync_client
from serving.registry import (
    announce,
    announce_experiment,
    open_store,
    update_history,
)
from streamrec.errors import BundleError, ConfigError
from streamrec.settings import Settings
from streamrec.stats import mean_interval, sign_test, two_proportion_test, wilson_interval

log = logging.getLogger(__name__)

CURRENT = "current"  # an arm's version: the one announced when the experiment starts


async def experiment_records(settings: Settings) -> tuple[str | None, dict[str, Experiment]]:
    """The current model version (None: nothing announced) and every experiment's state."""
    models, records = await update_history(settings)
    return (models[-1].version if models else None), ex.latest(records)


async def start_experiment(settings: Settings, name: str, arms: Sequence[Arm], mode: str = ex.AB,
                           salt: str = "", canary: CanaryPolicy | None = None) -> Experiment:
    """Resolve and check the arms' bundles (each must be in the store and load), then
    announce the experiment. Refused while another one runs, or for a name used before."""
    current, known = await experiment_records(settings)
    running = [e.name for e in known.values() if e.running]
    if running:
        raise ConfigError(f"experiment {running[0]!r} is running: stop it first "
                          f"(streamrec experiment stop {running[0]})")
    if name in known:
        raise ConfigError(f"experiment name {name!r} was used before (its counts are kept): "
                          "choose another name")
    store = open_store(settings)
    resolved = []
    for arm in arms:
        version = arm.version
        if version == CURRENT:
            if current is None:
                raise ConfigError(f"arm {arm.name!r} names the current version, but none has "
                                  "been announced")
            version = current
        try:
            a = store.announcement(version)
        except BundleError as e:
            raise ConfigError(f"arm {arm.name!r}: {e}") from None
        await asyncio.get_running_loop().run_in_executor(None, load_bundle, store.path(version))
        resolved.append(replace(arm, version=version, uri=a.uri,
                                manifest_sha256=a.manifest_sha256))
    now = int(time.time() * 1000)
    exp = ex.check(Experiment(name, tuple(resolved), mode, salt, ex.RUNNING, now, now,
                              canary=canary))
    await announce_experiment(settings, exp)
    log.info("experiment %s started", name, extra={"experiment": name})
    return exp


async def stop_experiment(settings: Settings, name: str, promote: str | None = None,
                          decision: str = "") -> Experiment:
    """Stop ``name``; with ``promote``, first announce that arm's version to the fleet."""
    current, known = await experiment_records(settings)
    exp = known.get(name)
    if exp is None:
        raise ConfigError(f"no experiment named {name!r}"
                          + (f" (known: {', '.join(known)})" if known else ""))
    if not exp.running:
        raise ConfigError(f"experiment {name!r} is already stopped")
    promoted = ""
    if promote is not None:
        arm = exp.arm(promote)
        if arm.overrides():
            log.warning("arm %s changes funnel settings (%s): set them in the deployment's "
                        "STREAMREC_* settings to keep them", arm.name, arm.overrides())
        if arm.version != current:  # the fleet's version first: no gap between the two
            a = open_store(settings).announcement(
                arm.version, reason=f"promote {name}/{arm.name}")
            await announce(settings, a)
        promoted = arm.name
    now = int(time.time() * 1000)
    stopped = replace(exp, state=ex.STOPPED, updated_at=now, promoted=promoted,
                      decision=decision or (f"stopped, {promoted} promoted" if promoted
                                            else "stopped"))
    await announce_experiment(settings, stopped)
    log.info("experiment %s: %s", name, stopped.decision, extra={"experiment": name})
    return stopped


def read_counts(settings: Settings, name: str) -> tuple[dict[str, OnlineCounts], dict[str, int]]:
    """What the workers counted for ``name``: the sums per arm, and team-draft wins per arm."""
    client = sync_client(settings.redis_url.get_secret_value(), settings.redis_cluster)
    try:
        raw = client.hgetall(experiment_key(meta_prefix(settings.key_prefix, settings.redis_cluster),
                                            name))
    finally:
        client.close()
    fields: dict[str, dict[str, float]] = {}
    for k, v in raw.items():
        arm, _, what = (k.decode() if isinstance(k, bytes) else k).rpartition(":")
        fields.setdefault(arm, {})[what] = float(v)
    counts = {arm: OnlineCounts.from_fields(f) for arm, f in fields.items() if "clicks" in f}
    wins = {arm: int(f["wins"]) for arm, f in fields.items() if "wins" in f}
    return counts, wins


def report(exp: Experiment, counts: dict[str, OnlineCounts], wins: dict[str, int],
           confidence: float = 0.95) -> dict[str, Any]:
    """Per-arm online HR@10 and NDCG@10 with their intervals; for A/B, each arm against
    the first (control) by the two-proportion test on HR@10; for interleaving, the wins
    per arm and the sign test."""
    arms = []
    for a in exp.arms:
        c = counts.get(a.name, OnlineCounts())
        arms.append(_arm_row(a.name, c, confidence)
                    | {"version": a.version, "weight": a.weight, "overrides": a.overrides()})
    out: dict[str, Any] = {"experiment": exp.name, "mode": exp.mode, "state": exp.state,
                           "started_at": exp.started_at, "decision": exp.decision,
                           "promoted": exp.promoted, "confidence": confidence, "arms": arms}
    if exp.mode == ex.INTERLEAVE:
        first, second = exp.arms[0].name, exp.arms[1].name
        wa, wb = wins.get(first, 0), wins.get(second, 0)
        merged = counts.get(ex.INTERLEAVED_ARM, OnlineCounts())
        out["interleaving"] = {"wins": {first: wa, second: wb}, "clicks": merged.clicks,
                               "ties": merged.clicks - wa - wb,
                               "win_share": {first: wa / max(wa + wb, 1),
                                             second: wb / max(wa + wb, 1)},
                               "sign_test_p": sign_test(wa, wb),
                               "list": _arm_row(ex.INTERLEAVED_ARM, merged, confidence)}
    else:
        control = counts.get(exp.arms[0].name, OnlineCounts())
        tests = []
        for a in exp.arms[1:]:
            c = counts.get(a.name, OnlineCounts())
            t = two_proportion_test(control.hits[10], control.clicks, c.hits[10], c.clicks,
                                    confidence)
            tests.append({"arm": a.name, "against": exp.arms[0].name,
                          "hr@10_difference": t.difference, "interval": [t.low, t.high],
                          "z": t.z, "p_value": t.p_value})
        out["tests"] = tests
    return out


def _arm_row(name: str, c: OnlineCounts, confidence: float) -> dict[str, Any]:
    ndcg, lo, hi = mean_interval(c.ndcg10, c.ndcg10_sq, c.clicks, confidence)
    r = c.ratios()
    return {"arm": name, "clicks": c.clicks, "hr@10": r["hr@10"],
            "hr@10_interval": list(wilson_interval(c.hits[10], c.clicks, confidence)),
            "ndcg@10": ndcg, "ndcg@10_interval": [lo, hi], "mrr": r["mrr"],
            "on_list": r["on_list"], **{f"hr@{k}": r[f"hr@{k}"] for k in KS if k != 10}}


def format_report(r: dict[str, Any]) -> str:
    """The report as text (``experiment report`` without ``--json``)."""
    pct = f"{r['confidence']:.0%}"
    lines = [f"experiment {r['experiment']} ({r['mode']}, {r['state']})"
             + (f": {r['decision']}" if r["decision"] else "")]
    for a in r["arms"]:
        lo, hi = a["hr@10_interval"]
        nlo, nhi = a["ndcg@10_interval"]
        extra = f" [{a['overrides']}]" if a["overrides"] else ""
        share = f" {a['weight']}%" if r["mode"] == ex.AB else ""
        lines.append(f"  {a['arm']:<12} {a['version']}{share}{extra}: {a['clicks']} clicks, "
                     f"HR@10 {a['hr@10']:.4f} ({pct} {lo:.4f}-{hi:.4f}), "
                     f"NDCG@10 {a['ndcg@10']:.4f} ({pct} {nlo:.4f}-{nhi:.4f})")
    for t in r.get("tests", []):
        lo, hi = t["interval"]
        lines.append(f"  {t['arm']} vs {t['against']}: HR@10 {t['hr@10_difference']:+.4f} "
                     f"({pct} {lo:+.4f} to {hi:+.4f}), z {t['z']:.2f}, p {t['p_value']:.4g}")
    if "interleaving" in r:
        i = r["interleaving"]
        (a, wa), (b, wb) = i["wins"].items()
        lines.append(f"  team draft: {i['clicks']} clicks, wins {a} {wa} / {b} {wb} "
                     f"({i['ties']} off the list), sign test p {i['sign_test_p']:.4g}")
    return "\n".join(lines)


def policy_from(settings: Settings, **overrides: Any) -> CanaryPolicy:
    """The canary policy: the settings' defaults, each overridable (None: the default)."""
    base: dict[str, Any] = {"margin": settings.canary_margin, "confidence": settings.canary_confidence,
                            "min_clicks": settings.canary_min_clicks,
                            "max_clicks": settings.canary_max_clicks}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return CanaryPolicy(**base)


async def publish_canary(settings: Settings, bundle_dir: Path, percent: int,
                         policy: CanaryPolicy | None = None) -> Experiment:
    """Check ``bundle_dir`` offline (loads; the quality gate against the current version),
    copy it into the store and start it as a canary on ``percent`` % of users."""
    if not 1 <= percent <= 99:
        raise ConfigError(f"--canary takes a share of users from 1 to 99, not {percent}")
    current, known = await experiment_records(settings)
    if current is None:
        raise ConfigError("no version is announced: a canary needs a current version to "
                          "compare with (publish it first)")
    store = open_store(settings)
    loop = asyncio.get_running_loop()
    bundle = await loop.run_in_executor(None, load_bundle, bundle_dir)
    if bundle.version == current:
        raise ConfigError(f"{bundle.version} is already the current version")
    serving_now = await loop.run_in_executor(None, load_bundle, store.path(current))
    QualityGate(settings.min_valid_ndcg, settings.max_ndcg_drop).check(bundle, serving_now)
    store.publish(bundle_dir)
    name, n = f"canary-{bundle.version}"[:60], 2
    base = name
    while name in known:
        name, n = f"{base}-{n}", n + 1
    arms = [Arm("control", current, 100 - percent), Arm("canary", bundle.version, percent)]
    return await start_experiment(settings, name, arms, canary=policy or policy_from(settings))


async def canary_step(settings: Settings) -> tuple[Experiment, Decision] | None:
    """One look at the running canary (None: none runs): promote, roll back or wait."""
    _, known = await experiment_records(settings)
    exp = next((e for e in known.values() if e.running and e.canary is not None), None)
    if exp is None or exp.canary is None:
        return None
    counts, _ = read_counts(settings, exp.name)
    control, canary = (counts.get(a.name, OnlineCounts()) for a in exp.arms[:2])
    d = ex.canary_decision((control.hits[10], control.clicks), (canary.hits[10], canary.clicks),
                           exp.canary)
    log.info("canary %s: %s: %s", exp.name, d.action, d.why,
             extra={"experiment": exp.name, "decision": d.action})
    if d.action == ex.PROMOTE:
        exp = await stop_experiment(settings, exp.name, promote=exp.arms[1].name,
                                    decision=f"promoted: {d.why}")
    elif d.action == ex.ROLLBACK:
        exp = await stop_experiment(settings, exp.name, decision=f"rolled back: {d.why}")
    return exp, d
