"""The compose stack's monitoring (deploy/monitoring/) and its compose file: the dashboard's
structure and queries, the alert rules and Prometheus configuration (promtool), and what
the compose file promises (restart policies, the Redis secret and volume, local ports)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest

from serving.online import OnlineMetrics, Shown
from streams.prometheus import WorkerMetrics
from tests.promql import (
    ALERTS,
    DASHBOARD,
    MONITORING,
    ROOT,
    SYNTHETIC,
    alert_exprs,
    dashboard_exprs,
    exported_names,
    metric_names,
    promtool,
)

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = sorted(name for name in SERVICES if name.startswith("worker"))
PROVISIONING = MONITORING / "grafana" / "provisioning"


def worker_names() -> set[str]:
    """What a worker's /metrics can hold, from the code's metric definitions (every
    collector the worker registers, with some data in each)."""
    m = WorkerMetrics()
    online = OnlineMetrics(10)
    online.remember_shown([("u1", Shown(("1", "2"), "v1", "all", "l1", "", ()))])
    m.watch_online(online, lambda: ("v1", 2))
    m.watch_consumer(lambda: {("clicks", 0): (10, 4)})
    m.watch_model(lambda: "2026-12-01T10:00:00Z")
    m.latency.add(np.array([3, 40]))
    m.dead_lettered.labels("malformed_json").inc()
    m.refusals.labels("quality").inc()
    return exported_names(generate_latest(m.registry).decode())


def test_metric_names_are_read_from_promql() -> None:
    expr = ('sum by (arm) (rate(streamrec_online_hits_total{k="10",arm=~"a|b"}[$__rate_interval]))'
            ' / on (arm) group_left sum without (le) (streamrec_online_clicks_total offset 5m)'
            ' > bool 0 or vector(0) unless absent(up)')
    assert metric_names(expr) == {"streamrec_online_hits_total", "streamrec_online_clicks_total", "up"}


def test_the_dashboard_is_well_formed() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "streamrec" and d["title"] and isinstance(d["schemaVersion"], int)
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in {"timeseries", "table", "stat"}, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        targets = p["targets"]
        assert targets and len({t["refId"] for t in targets}) == len(targets), p["title"]
        for t in targets:
            assert t["expr"].strip() and t["datasource"] == p["datasource"], p["title"]


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    by_title = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    exprs = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in by_title.items()}
    assert "streamrec_events_total" in exprs["Events/s"]
    assert "by (topic, partition)" in exprs["Consumer lag per partition"]
    latency = exprs["Event → Redis latency"]
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    assert "by (reason)" in exprs["Dead letters by kind"]
    assert "streamrec_model_info" in exprs["Model version per worker"]
    assert "by (instance, version" in exprs["Model version per worker"]
    swaps = exprs["Model swaps and refusals"]
    assert "streamrec_model_swaps_total" in swaps and "streamrec_model_refusals_total" in swaps
    hr = exprs["Online HR@10 per arm"]
    assert 'streamrec_online_hits_total{k="10"}' in hr and "by (arm)" in hr


@pytest.mark.parametrize(("where", "expr"), [*dashboard_exprs(), *alert_exprs()])
def test_every_query_names_metrics_the_worker_exports(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr}"
    unknown = names - worker_names() - SYNTHETIC
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by the worker"


def test_alerts_cover_lag_dead_letters_readiness_and_a_stale_model() -> None:
    rules = {name: expr for name, expr in alert_exprs()}
    assert "streamrec_consumer_lag_records" in rules["StreamrecConsumerLag"]
    assert "streamrec_dead_lettered_total" in rules["StreamrecDeadLetters"]
    assert "streamrec_ready" in rules["StreamrecNoReadyWorker"]
    assert "streamrec_model_created_timestamp_seconds" in rules["StreamrecStaleModel"]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_promtool_accepts_the_rules_and_the_configuration(tmp_path: Path) -> None:
    tool = promtool()
    for args in (["check", "rules", str(ALERTS)],
                 ["check", "config", str(MONITORING / "prometheus" / "prometheus.yml")]):
        r = subprocess.run([tool, *args], check=False, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "alerts.yml"  # and it does refuse a rule that does not parse
    broken.write_text(ALERTS.read_text().replace("> 10000", "> > 10000", 1))
    r = subprocess.run([tool, "check", "rules", str(broken)], check=False, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "StreamrecConsumerLag" in r.stdout + r.stderr


def test_prometheus_scrapes_every_worker_of_the_compose_file() -> None:
    assert len(WORKERS) >= 2
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "streamrec"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    port = SERVICES[WORKERS[0]]["environment"]["STREAMREC_WEB_PORT"]
    assert targets == {f"{w}:{port}" for w in WORKERS}
    assert "./deploy/monitoring/prometheus:/etc/prometheus:ro" in SERVICES["prometheus"]["volumes"]
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard() -> None:
    mounts = {v.split(":")[0]: v.split(":")[1] for v in SERVICES["grafana"]["volumes"]}
    assert mounts["./deploy/monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "streamrec.yml").read_text())
    (p,) = provider["providers"]
    assert mounts["./deploy/monitoring/grafana/dashboards"] == p["options"]["path"]
    env = SERVICES["grafana"]["environment"]
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == p["options"]["path"] + "/streamrec.json"
    secret = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].removeprefix("/run/secrets/")
    assert secret in SERVICES["grafana"]["secrets"] and secret in COMPOSE["secrets"]


def test_compose_restarts_services_and_publishes_on_localhost_only() -> None:
    for name, svc in SERVICES.items():
        if "profiles" not in svc:  # long-running services, not the one-shot trainer
            assert svc.get("restart") == "unless-stopped", name
        for port in svc.get("ports", []):
            assert port.startswith("${PUBLISH_HOST:-127.0.0.1}:"), (name, port)


def test_redis_has_a_password_from_a_secret_and_an_append_only_volume() -> None:
    redis = SERVICES["redis"]
    assert "redis_password" in redis["secrets"]
    assert COMPOSE["secrets"]["redis_password"]["file"].startswith("./secrets/")
    command = " ".join(redis["entrypoint"])
    assert "requirepass" in command and "/run/secrets/redis_password" in command
    assert "--appendonly yes" in command
    assert any(v.endswith(":/data") and not v.startswith(".") for v in redis["volumes"])
    assert "/run/secrets/redis_password" in " ".join(redis["healthcheck"]["test"])
    for name in [*WORKERS, "trainer"]:  # every client gets the password
        env, svc = SERVICES[name]["environment"], SERVICES[name]
        assert env["STREAMREC_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password", name
        assert "redis_password" in svc["secrets"], name
        assert "@" not in env["STREAMREC_REDIS_URL"], name  # no password in the URL


def test_each_worker_advertises_the_address_its_port_is_published_at() -> None:
    ids = set()
    for name in WORKERS:
        env, (port,) = SERVICES[name]["environment"], SERVICES[name]["ports"]
        host_port, container_port = port.split(":")[-2:]
        assert container_port == env["STREAMREC_WEB_PORT"], name
        assert env["STREAMREC_WEB_ADVERTISED_ADDRESS"] == f"${{ADVERTISE_HOST:-127.0.0.1}}:{host_port}"
        ids.add(env["STREAMREC_GROUP_INSTANCE_ID"])
    assert len(ids) == len(WORKERS)  # static membership: one id per worker
