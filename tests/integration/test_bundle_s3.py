"""Bundles through an s3:// store (a local S3 server, moto's): published, announced,
downloaded and swapped by a live worker; a publish killed halfway announces nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serving import object_store
from serving.bundle import load_bundle
from serving.keys import recs_key
from serving.manifest import MANIFEST, decode_manifest
from serving.registry import Announcement, announce, announcement_history, publish_bundle
from streamrec.events import ClickEvent, encode_event
from streamrec.settings import Settings
from streams.replay import send_raw
from tests.integration.conftest import WorkerProc
from tests.s3server import moto_server, new_bucket, s3_settings

pytestmark = pytest.mark.integration

StartWorker = Callable[[Settings, Path], WorkerProc]
NO_BUNDLE = Path("/nonexistent/bundle")  # the model comes from announcements only
ROOT = Path(__file__).resolve().parents[2]

# A publisher that is killed (SIGKILL, no clean-up) when it starts its third file upload.
KILLED_PUBLISH = """
import asyncio, os, signal, sys
from pathlib import Path
from serving import object_store
from serving.registry import publish_bundle
from streamrec.settings import Settings

make_client, started = object_store.client, []

def client(settings):
    c = make_client(settings)
    upload = c.upload_file
    def upload_file(*args, **kwargs):
        if len(started) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        started.append(args[2])
        return upload(*args, **kwargs)
    c.upload_file = upload_file
    return c

object_store.client = client
asyncio.run(publish_bundle(Settings(), Path(sys.argv[1]), validate=False))
"""


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


def wait_version(w: WorkerProc, version: str) -> dict[str, str]:
    return w.wait_for(lambda st: st.get("model_version") == version, 90, f"version {version}")


def click(s: Settings, users: int, item: str, tag: str) -> None:
    now = int(time.time() * 1000)
    asyncio.run(send_raw(s.kafka_bootstrap, s.clicks_topic, [
        (f"u{u}".encode(), encode_event(ClickEvent(f"u{u}/{tag}", f"u{u}", item, now)))
        for u in range(users)]))


def test_a_live_worker_swaps_to_a_bundle_published_to_s3(
    make_settings: Callable[..., Settings], start_worker: StartWorker, endpoint: str,
    tiny_bundle_dir: Path, tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(**s3_settings(endpoint, new_bucket(endpoint)), data_dir=tmp_path / "data")
    a = asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    assert a.uri.startswith("s3://")
    w = start_worker(s, NO_BUNDLE)
    wait_version(w, a.version)
    b = asyncio.run(publish_bundle(s, tiny_bundle_b, validate=False))
    st = wait_version(w, b.version)
    assert st["previous_version"] == a.version and "last_rejection" not in st
    local = tmp_path / "data" / "bundles" / b.version  # downloaded into the data directory
    assert {p.name for p in local.iterdir()} == {*decode_manifest((tiny_bundle_b / MANIFEST)
                                                                   .read_bytes()).files, MANIFEST}
    item = load_bundle(tiny_bundle_b).vocab.ids[0]
    click(s, 5, item, "after-swap")
    w.wait_events(5)
    for u in range(5):
        assert w.client.hget(recs_key(s.key_prefix, f"u{u}"), "model_version") == b.version


def test_a_publish_killed_halfway_is_never_announced_and_workers_keep_their_version(
    make_settings: Callable[..., Settings], start_worker: StartWorker, endpoint: str,
    tiny_bundle_dir: Path, tiny_bundle_b: Path, tmp_path: Path,
) -> None:
    s = make_settings(**s3_settings(endpoint, new_bucket(endpoint)), data_dir=tmp_path / "data")
    a = asyncio.run(publish_bundle(s, tiny_bundle_dir, validate=False))
    w = start_worker(s, NO_BUNDLE)
    wait_version(w, a.version)

    env = {**os.environ, **s.to_env(), "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLED_PUBLISH, str(tiny_bundle_b)], env=env,
                            cwd=tmp_path, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]

    b_version = decode_manifest((tiny_bundle_b / MANIFEST).read_bytes()).version
    loc = object_store.S3Location.parse(s.bundle_store)
    listed = object_store.client(s).list_objects_v2(Bucket=loc.bucket,
                                                    Prefix=loc.key(b_version) + "/")
    uploaded = [o["Key"] for o in listed.get("Contents", [])]
    assert len(uploaded) == 2 and not any(k.endswith(MANIFEST) for k in uploaded)  # halfway
    history = asyncio.run(announcement_history(s))
    assert [h.version for h in history] == [a.version]  # nothing announced

    # announced anyway (by hand, a stale script): the worker refuses it and keeps serving A
    forged = Announcement(b_version, loc.child(b_version).uri, "0" * 64, int(time.time() * 1000))
    asyncio.run(announce(s, forged))
    st = w.wait_for(lambda st: b_version in st.get("last_rejection", ""), 60, "the refusal")
    assert " download: no manifest" in st["last_rejection"] and st["model_version"] == a.version
    assert not (tmp_path / "data" / "bundles" / b_version).exists()
    item = load_bundle(tiny_bundle_dir).vocab.ids[0]
    click(s, 3, item, "after-refusal")
    w.wait_events(3)
    assert w.client.hget(recs_key(s.key_prefix, "u0"), "model_version") == a.version
    assert w.proc.poll() is None

    b = asyncio.run(publish_bundle(s, tiny_bundle_b, validate=False))  # publishing again completes it
    assert b.version == b_version
    wait_version(w, b.version)
