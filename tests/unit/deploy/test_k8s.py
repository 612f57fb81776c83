"""deploy/k8s: rendered (deploy/check-k8s.py), validated against Kubernetes' schemas, and
checked against the image (its user, paths and port), the CLI and the settings."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("check_k8s", ROOT / "deploy/check-k8s.py")
assert spec and spec.loader
check = importlib.util.module_from_spec(spec)
sys.modules["check_k8s"] = check  # its dataclasses look their module up
spec.loader.exec_module(check)

Doc = dict[str, Any]
DOCS: list[Doc] = check.render()
IMAGE = check.Image.read()


def find(docs: list[Doc], kind: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind)


def worker(docs: list[Doc]) -> Doc:
    c: Doc = find(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    return c


def test_the_base_is_every_file_of_the_directory() -> None:
    listed = set(check.yaml.safe_load((check.BASE / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in check.BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = sorted(d["kind"] for d in DOCS)
    assert kinds == ["ConfigMap", "CronJob", "PodDisruptionBudget", "Secret", "Service", "Service",
                     "StatefulSet"]


@pytest.mark.parametrize("version", check.SCHEMA_VERSIONS)
def test_every_resource_validates_against_the_schemas(version: str) -> None:
    assert check.schema_errors(DOCS, version) == []


def test_a_misspelt_field_fails_the_schema() -> None:
    docs = copy.deepcopy(DOCS)
    c = worker(docs)
    c["livenesProbe"] = c.pop("livenessProbe")
    errors = check.schema_errors(docs, "latest")
    assert len(errors) == 1 and "StatefulSet/streamrec-worker" in errors[0]
    assert "livenesProbe" in errors[0]


def test_the_manifests_keep_the_images_contract() -> None:
    assert (IMAGE.uid, IMAGE.data_dir, IMAGE.web_port) == (10001, "/var/lib/streamrec", 6066)
    assert check.contract_errors(DOCS, IMAGE) == []
    sts = find(DOCS, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "worker" in worker(DOCS)["image"]  # the Dockerfile's targets: worker, trainer
    cron = find(DOCS, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "trainer" in cron["containers"][0]["image"]


def _set(path: str, value: object) -> Callable[[list[Doc]], None]:
    def change(docs: list[Doc]) -> None:
        keys = path.split(".")
        d: Any = worker(docs) if keys[0] == "worker" else find(docs, keys[0])
        for k in keys[1:-1]:
            d = d[int(k)] if k.isdigit() else d[k]
        last: Any = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
        if value is None:
            del d[last]
        else:
            d[last] = value
    return change


@pytest.mark.parametrize(("change", "message"), [
    (_set("StatefulSet.spec.template.spec.enableServiceLinks", None), "enableServiceLinks: false"),
    (_set("StatefulSet.spec.template.spec.securityContext.runAsUser", 0), "runAsUser must be the image's uid"),
    (_set("CronJob.spec.jobTemplate.spec.template.spec.securityContext.fsGroup", 1000), "fsGroup"),
    (_set("worker.volumeMounts.0.mountPath", "/data"), "nothing mounted at the data directory"),
    (_set("StatefulSet.spec.volumeClaimTemplates", None), "must be a volumeClaimTemplate"),
    (_set("worker.readinessProbe.httpGet.path", "/health"), "readinessProbe must be GET /ready"),
    (_set("worker.livenessProbe.httpGet.port", 8080), "livenessProbe must be GET /health"),
    (_set("worker.ports.0.containerPort", 8080), "containerPort http must be STREAMREC_WEB_PORT"),
    (_set("worker.resources", None), "resources need"),
    (_set("worker.volumeMounts.1", None), "needs a volume at /tmp"),
    (_set("PodDisruptionBudget.spec.selector.matchLabels", {"app": "other"}), "matches no worker pod"),
    (_set("Service.spec.clusterIP", "10.0.0.5"), "must be a headless Service"),
    (_set("ConfigMap.data.STREAMREC_DATA_DIR", "/data"), "may write only /var/lib/streamrec"),
    (_set("worker.envFrom.0.configMapRef.name", "other"), "ConfigMap/other, which is not rendered"),
    (_set("ConfigMap.data.STREAMREC_WEB_BIND", "127.0.0.1"), "not its loopback"),
])
def test_a_broken_contract_is_reported(change: Callable[[list[Doc]], None], message: str) -> None:
    docs = copy.deepcopy(DOCS)
    change(docs)
    errors = check.contract_errors(docs, IMAGE)
    assert any(message in e for e in errors), errors


def test_the_pods_settings_are_settings_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    env = check.settings_env(DOCS)
    for k, v in {**IMAGE.env, **env}.items():  # the image's ENV, then the pod's (it wins)
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.bundle_store.startswith("s3://") and s.table_store == "rocksdb"
    assert str(s.data_dir) == IMAGE.data_dir and s.web_port == IMAGE.web_port
    assert s.group_instance_id == "pod-name" and s.s3_secret_access_key is not None
    # the same pods with service links on: the Services' variables do not stop them
    for svc in (d for d in DOCS if d["kind"] == "Service"):
        prefix = svc["metadata"]["name"].upper().replace("-", "_")
        monkeypatch.setenv(f"{prefix}_SERVICE_HOST", "10.0.0.9")
        monkeypatch.setenv(f"{prefix}_SERVICE_PORT", "6066")
        monkeypatch.setenv(f"{prefix}_PORT", "tcp://10.0.0.9:6066")
        monkeypatch.setenv(f"{prefix}_PORT_6066_TCP_ADDR", "10.0.0.9")
    assert Settings().web_port == IMAGE.web_port


def test_the_containers_run_commands_the_cli_has() -> None:
    import typer

    from cli import app

    group: Any = typer.main.get_command(app)
    cron = find(DOCS, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for args in (worker(DOCS)["args"], cron["containers"][0]["args"]):
        command = group.commands[args[0]]
        ctx = command.make_context(args[0], list(args[1:]))  # refuses an unknown option
        assert ctx.params is not None


def test_the_renderer_refuses_what_it_does_not_apply(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: []\n")
    with pytest.raises(ValueError, match="patches"):
        check.render(tmp_path)


def test_the_check_script_passes() -> None:
    assert check.main() == 0
