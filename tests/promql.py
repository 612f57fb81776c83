"""The metric names PromQL expressions use, and the names a ``/metrics`` text exports: the
dashboard and the alert rules (deploy/monitoring/) may only name metrics a worker exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "streamrec.json"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
# series Prometheus makes itself, not the worker
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                      "and", "or", "unless", "offset", "inf", "nan"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (not functions, labels, keywords or numbers)."""
    e = _STRINGS.sub('""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery windows ($__rate_interval too)
    e = _GROUPING.sub("", e)
    return {n for n in _IDENT.findall(e) if n.lower() not in KEYWORDS}


def dashboard_exprs(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    for panel in json.loads(path.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def alert_exprs(path: Path = ALERTS) -> Iterator[tuple[str, str]]:
    """(alert name, expr) of every rule."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def exported_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition can hold, from its families (a family
    with no sample yet, e.g. a labelled counter before its first increment, counts)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created")}
    names: set[str] = set()
    for f in text_string_to_metric_families(text):
        names.update(f.name + s for s in suffixes.get(f.type, ("",)))
        names.update(s.name for s in f.samples)
    return names


def promtool() -> str:
    """promtool's path. Absent: a failure in CI (``make check`` installs Debian's prometheus
    package there, as root), a skip elsewhere."""
    import os
    import shutil

    import pytest

    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: deploy/check-compose.sh installs it "
                        "(apt-get install prometheus) when it runs as root")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; "
                    "`make check` installs it when run as root)")
    return path
