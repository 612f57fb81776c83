"""Render deploy/k8s (the kustomization's resources) and check it: Kubernetes' schemas, then
the image's contract (user, paths, port) and the settings the pods get.

    python deploy/check-k8s.py            # make check; exit 1 with every problem listed

No kubectl or cluster: the base uses only kustomize's ``resources`` (anything else is
refused here, so that what is checked is what ``kubectl apply -k`` applies), and the
schemas are the ones bundled in the ``kubernetes-validate`` package (offline, strict:
an unknown field fails). tests/unit/deploy/test_k8s.py runs the same checks.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests support and the newest schemas the package has.
SCHEMA_VERSIONS = ("1.29.0", "latest")
RENDERED_KEYS = {"apiVersion", "kind", "resources"}


@dataclass(frozen=True)
class Image:
    """What the image promises (deploy/Dockerfile, deploy/image-layout.sh)."""

    uid: int
    data_dir: str
    web_port: int
    env: dict[str, str]

    @classmethod
    def read(cls, root: Path = ROOT) -> Image:
        dockerfile = (root / "deploy" / "Dockerfile").read_text()
        env = dict(re.findall(r"\b(STREAMREC_[A-Z0-9_]+)=(\S+)", dockerfile))
        uid = re.search(r"UID_=\$\{STREAMREC_UID:-(\d+)\}", (root / "deploy" / "image-layout.sh").read_text())
        if uid is None or "USER streamrec" not in dockerfile:
            raise SystemExit("check-k8s: cannot read the image's user from deploy/")
        return cls(int(uid[1]), env["STREAMREC_DATA_DIR"], int(env["STREAMREC_WEB_PORT"]), env)


def render(base: Path = BASE) -> list[dict[str, Any]]:
    """The resources of ``base``'s kustomization, in its order."""
    k = yaml.safe_load((base / "kustomization.yaml").read_text())
    other = sorted(set(k) - RENDERED_KEYS)
    if other:
        raise ValueError(f"{base}/kustomization.yaml: {other} are not rendered by this check; "
                         "use only resources (or extend deploy/check-k8s.py)")
    docs: list[dict[str, Any]] = []
    for rel in k["resources"]:
        docs.extend(d for d in yaml.safe_load_all((base / rel).read_text()) if d)
    return docs


def schema_errors(docs: list[dict[str, Any]], version: str) -> list[str]:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    out = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            out.append(f"{name(d)} (Kubernetes {version}): {where}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            out.append(f"{name(d)} (Kubernetes {version}): {e}")
    return out


def name(d: dict[str, Any]) -> str:
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every StatefulSet, Deployment, Job and CronJob."""
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            out.append((d, spec["jobTemplate"]["spec"]["template"]))
        elif d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            out.append((d, spec["template"]))
    return out


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def contract_errors(docs: list[dict[str, Any]], image: Image) -> list[str]:
    """The manifests against the image and each other (see the module's docstring)."""
    errs: list[str] = []
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    config = {k: str(v) for d in docs if d["kind"] == "ConfigMap" for k, v in d.get("data", {}).items()}
    data_dir = config.get("STREAMREC_DATA_DIR", image.data_dir)
    web_port = int(config.get("STREAMREC_WEB_PORT", image.web_port))
    bind = config.get("STREAMREC_WEB_BIND", image.env.get("STREAMREC_WEB_BIND", "127.0.0.1"))
    if bind.startswith("127.") or bind in ("localhost", "::1"):
        errs.append(f"STREAMREC_WEB_BIND is {bind}: the kubelet's probes and the Services "
                    "reach the pod's own address, not its loopback")
    if data_dir != image.data_dir:
        errs.append(f"STREAMREC_DATA_DIR is {data_dir}, but the image's service user may write "
                    f"only {image.data_dir}")
    worker_pods: list[dict[str, str]] = []
    for workload, tpl in pod_templates(docs):
        w, pod = name(workload), tpl["spec"]
        labels = tpl.get("metadata", {}).get("labels", {})
        if pod.get("enableServiceLinks") is not False:
            errs.append(f"{w}: set enableServiceLinks: false (service variables are not settings)")
        sc = pod.get("securityContext", {})
        for key in ("runAsUser", "runAsGroup", "fsGroup"):
            if sc.get(key) != image.uid:
                errs.append(f"{w}: securityContext.{key} must be the image's uid {image.uid}")
        if sc.get("runAsNonRoot") is not True:
            errs.append(f"{w}: securityContext.runAsNonRoot must be true")
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | claims
        for c in pod["containers"]:
            where = f"{w} container {c['name']}"
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") \
                    or not res.get("limits", {}).get("memory"):
                errs.append(f"{where}: resources need cpu and memory requests and a memory limit")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                if m not in volumes:
                    errs.append(f"{where}: mounts volume {m}, which the pod does not have")
            if data_dir not in mounts:
                errs.append(f"{where}: nothing mounted at the data directory {data_dir}")
            csc = c.get("securityContext", {})
            if csc.get("readOnlyRootFilesystem") and "/tmp" not in mounts:
                errs.append(f"{where}: a read-only root filesystem needs a volume at /tmp")
            if csc.get("allowPrivilegeEscalation") is not False:
                errs.append(f"{where}: set allowPrivilegeEscalation: false")
            for ref in c.get("envFrom", []):
                kind, ref_name = ("ConfigMap", ref["configMapRef"]["name"]) if "configMapRef" in ref \
                    else ("Secret", ref["secretRef"]["name"])
                if (kind, ref_name) not in by:
                    errs.append(f"{where}: envFrom names {kind}/{ref_name}, which is not rendered")
            if workload["kind"] == "StatefulSet":
                worker_pods.append(labels)
                errs += _worker_errors(workload, c, claims, mounts, data_dir, web_port)
        if not matches(workload["spec"].get("selector", {}).get("matchLabels", {}), labels) \
                and workload["kind"] != "CronJob":
            errs.append(f"{w}: its selector does not match its pod labels")
    for d in docs:
        selector = (d["spec"].get("selector") or {}) if d["kind"] == "Service" else \
            d["spec"]["selector"].get("matchLabels", {}) if d["kind"] == "PodDisruptionBudget" else None
        if selector is not None and not any(matches(selector, p) for p in worker_pods):
            errs.append(f"{name(d)}: its selector matches no worker pod")
    for s in (d for d in docs if d["kind"] == "StatefulSet"):
        svc = by.get(("Service", s["spec"]["serviceName"]))
        if svc is None or svc["spec"].get("clusterIP") != "None":
            errs.append(f"{name(s)}: serviceName {s['spec']['serviceName']} must be a headless "
                        "Service (clusterIP: None) in the base")
    return errs


def _worker_errors(sts: dict[str, Any], c: dict[str, Any], claims: set[str],
                   mounts: dict[str, str], data_dir: str, web_port: int) -> list[str]:
    w = name(sts)
    errs = []
    if mounts.get(data_dir) not in claims:
        errs.append(f"{w}: the data directory {data_dir} must be a volumeClaimTemplate "
                    "(one volume per replica for the RocksDB store)")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != web_port:
        errs.append(f"{w}: containerPort http must be STREAMREC_WEB_PORT {web_port}")
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http", web_port):
            errs.append(f"{w}: {probe} must be GET {path} on the http port")
    return errs


def settings_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Every variable the ConfigMaps, Secrets and containers' literal env give the pods."""
    env: dict[str, str] = {}
    for d in docs:
        if d["kind"] == "ConfigMap":
            env.update({k: str(v) for k, v in d.get("data", {}).items()})
        elif d["kind"] == "Secret":
            env.update({k: str(v) for k, v in d.get("stringData", {}).items()})
    for _, tpl in pod_templates(docs):
        for c in tpl["spec"]["containers"]:
            env.update({e["name"]: str(e.get("value", "pod-name")) for e in c.get("env", [])})
    return env


def main() -> int:
    docs = render()
    errs = [e for v in SCHEMA_VERSIONS for e in schema_errors(docs, v)]
    errs += contract_errors(docs, Image.read())
    sys.path.insert(0, str(ROOT))
    from streamrec.errors import ConfigError
    from streamrec.settings import unknown_variables

    try:
        unknown_variables(settings_env(docs))
    except ConfigError as e:
        errs.append(f"settings: {e}")
    for e in errs:
        print(f"check-k8s: {e}", file=sys.stderr)
    if errs:
        return 1
    import kubernetes_validate

    versions = ", ".join(kubernetes_validate.latest_version() if v == "latest" else v
                         for v in SCHEMA_VERSIONS)
    print(f"deploy/k8s: {len(docs)} resources valid (Kubernetes {versions} schemas, strict) "
          "and consistent with the image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
