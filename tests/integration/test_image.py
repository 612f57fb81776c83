"""A worker run the way the image runs it, with a model published from another process.

The image's tree (``deploy/image-layout.sh``) is built under a temporary root; the
settings come from the image's ``ENV`` lines and the compose file's worker
environment, with their absolute paths moved under that root. The worker starts
with no model in a working directory it must not write to, a trainer-side process
publishes into the shared store, and the worker swaps and serves.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml

from serving.bundle import load_bundle
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PATHS = ("STREAMREC_DATA_DIR", "STREAMREC_BUNDLE_PATH", "STREAMREC_BUNDLE_STORE")


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "deploy/Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def compose_env(service: str) -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {k: str(v) for k, v in compose["services"][service]["environment"].items()}


def test_image_and_compose_agree_on_the_writable_paths() -> None:
    image, worker, trainer = dockerfile_env(), compose_env("worker-1"), compose_env("trainer")
    for key in PATHS:
        assert image[key] == worker[key] == trainer[key], key
    # the trainer publishes into the store the workers read: on the shared bundle volume
    assert worker["STREAMREC_BUNDLE_STORE"].startswith("/bundles/")


def test_worker_as_in_the_image_swaps_to_a_model_published_from_another_process(
    make_settings: Callable[..., Settings], tiny_bundle_dir: Path, tmp_path: Path,
) -> None:
    root = tmp_path / "image"
    subprocess.run(["sh", str(ROOT / "deploy/image-layout.sh"), str(root)], check=True)
    env = {**dockerfile_env(), **compose_env("worker-1")}
    paths = {k.removeprefix("STREAMREC_").lower(): root / env[k].lstrip("/") for k in PATHS}
    s = make_settings(**paths)
    workdir = root / "app"  # root-owned in the image: nothing may be written here
    w = WorkerProc.start(s, tmp_path / "worker.log", cwd=workdir)
    try:
        deadline = time.monotonic() + 60
        while True:  # no model yet: alive, not ready
            try:
                status, body = w.get("/ready", timeout=1)
                if status == 503:
                    break
            except OSError:
                pass
            assert w.alive and time.monotonic() < deadline, w.tail()
            time.sleep(0.2)
        assert "no model bundle loaded" in orjson.loads(body)["waiting_for"]

        # the trainer's side: a new bundle on the volume, published from another process
        new = root / "bundles" / "new"
        shutil.copytree(tiny_bundle_dir, new)
        subprocess.run([sys.executable, "-m", "cli", "publish", str(new)], check=True,
                       env={**s.to_env(), "PATH": "/usr/bin:/bin"}, cwd=ROOT, capture_output=True)
        version = load_bundle(new).version
        w.wait_for(lambda st: st.get("model_version") == version, 60, "swap to the published model")
        assert (root / "bundles" / "store" / version / "manifest.json").is_file()

        item = load_bundle(new).vocab.ids[0]
        asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic,
                             [(b"u1", encode_event(ClickEvent("e1", "u1", item, 1)))]))
        w.wait_events(1)
        status, body = w.get("/recs/u1")
        assert status == 200 and orjson.loads(body)["model_version"] == version
        assert w.get("/ready")[0] == 200
    finally:
        w.stop()
    assert list(workdir.iterdir()) == []  # Faust's files went to STREAMREC_DATA_DIR
    assert any(paths["data_dir"].iterdir())
