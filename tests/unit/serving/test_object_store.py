"""The s3:// bundle store (:mod:`serving.object_store`, :class:`serving.registry.S3BundleStore`)
against a local S3 server (moto's server mode)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from serving import object_store
from serving.bundle import QualityGate
from serving.manifest import MANIFEST, decode_manifest
from serving.registry import Announcement, S3BundleStore, load_announced, open_store
from streamrec.errors import BundleError, BundleRejected, ConfigError
from streamrec.settings import Settings
from tests.s3server import moto_server, new_bucket, s3_settings


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture
def settings(endpoint: str, tmp_path: Path) -> Settings:
    return Settings(**s3_settings(endpoint, new_bucket(endpoint)), data_dir=tmp_path / "data")


def raw(s: Settings) -> Any:
    return object_store.client(s)


def keys(s: Settings) -> list[str]:
    loc = object_store.S3Location.parse(s.bundle_store)
    listed = raw(s).list_objects_v2(Bucket=loc.bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_publish_uploads_every_file_and_a_worker_downloads_and_loads_it(
        settings: Settings, tiny_bundle_dir: Path, tiny_bundle_b: Path) -> None:
    store = open_store(settings)
    assert isinstance(store, S3BundleStore)
    a = store.publish(tiny_bundle_dir)
    manifest = decode_manifest((tiny_bundle_dir / MANIFEST).read_bytes())
    assert a.uri == f"{settings.bundle_store}/{a.version}"
    assert keys(settings) == sorted(f"models/{a.version}/{f}" for f in [*manifest.files, MANIFEST])
    assert a.manifest_sha256 == hashlib.sha256((tiny_bundle_dir / MANIFEST).read_bytes()).hexdigest()

    bundle = load_announced(a, 1, QualityGate(), None, settings)
    assert bundle.version == a.version
    local = settings.data_dir / "bundles" / a.version  # type: ignore[operator]
    for rel, digest in manifest.files.items():
        assert hashlib.sha256((local / rel).read_bytes()).hexdigest() == digest

    again = store.publish(tiny_bundle_dir)  # idempotent: the same manifest
    assert (again.version, again.manifest_sha256) == (a.version, a.manifest_sha256)
    b = store.publish(tiny_bundle_b)
    assert {m.version for m in store.versions()} == {a.version, b.version}
    assert store.announcement(a.version, "rollback").reason == "rollback"


def test_a_version_is_immutable(settings: Settings, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    store = open_store(settings)
    store.publish(tiny_bundle_dir)
    other = tmp_path / "other"
    other.mkdir()
    for p in tiny_bundle_dir.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    m = json.loads((other / MANIFEST).read_text())
    m["metrics"] = {"changed": True}
    (other / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="already in .* with another manifest"):
        store.publish(other)


class FailingAfter:
    """An S3 client whose uploads fail after ``n`` files (the connection drops)."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.left = inner, n

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        from botocore.exceptions import EndpointConnectionError

        if self.left == 0:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        self.left -= 1
        self.inner.upload_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_upload_stopped_halfway_leaves_no_version(
        settings: Settings, tiny_bundle_dir: Path) -> None:
    store = S3BundleStore(object_store.S3Location.parse(settings.bundle_store), settings)
    store._client.append(FailingAfter(raw(settings), 2))
    version = decode_manifest((tiny_bundle_dir / MANIFEST).read_bytes()).version
    with pytest.raises(BundleError, match="nothing announced; publish again"):
        store.publish(tiny_bundle_dir)
    uploaded = keys(settings)
    assert len(uploaded) == 2 and not any(k.endswith(MANIFEST) for k in uploaded)
    fresh = open_store(settings)
    assert fresh.versions() == []
    with pytest.raises(BundleError, match="no manifest"):
        fresh.announcement(version)  # what publish and rollback announce from
    # an announcement forged for the partial version: refused, nothing left in the cache
    forged = Announcement(version, f"{settings.bundle_store}/{version}", "0" * 64, 0)
    with pytest.raises(BundleRejected, match="download: no manifest"):
        load_announced(forged, 1, QualityGate(), None, settings)
    assert not (settings.data_dir / "bundles" / version).exists()  # type: ignore[operator]
    assert fresh.publish(tiny_bundle_dir).version == version  # publishing again completes it


def test_a_changed_object_is_refused_before_loading(settings: Settings, tiny_bundle_dir: Path) -> None:
    a = open_store(settings).publish(tiny_bundle_dir)
    loc = object_store.S3Location.parse(a.uri)
    raw(settings).put_object(Bucket=loc.bucket, Key=loc.key("items.faiss"), Body=b"not an index")
    with pytest.raises(BundleRejected) as e:
        load_announced(a, 1, QualityGate(), None, settings)
    assert (e.value.check, e.value.path) == ("sha256", "items.faiss")
    cache = settings.data_dir / "bundles"  # type: ignore[operator]
    assert not (cache / a.version).exists() and not list(cache.iterdir())  # temp dir removed


def test_a_forged_manifest_is_refused(settings: Settings, tiny_bundle_dir: Path) -> None:
    a = open_store(settings).publish(tiny_bundle_dir)
    with pytest.raises(BundleRejected, match="announcement"):
        load_announced(Announcement(a.version, a.uri, "f" * 64, 0), 1, QualityGate(), None, settings)
    m = json.loads((tiny_bundle_dir / MANIFEST).read_text())
    m["files"] = {"../../escape": "0" * 64}
    body = json.dumps(m).encode()
    loc = object_store.S3Location.parse(a.uri)
    raw(settings).put_object(Bucket=loc.bucket, Key=loc.key(MANIFEST), Body=body)
    escape = Announcement(a.version, a.uri, hashlib.sha256(body).hexdigest(), 0)
    with pytest.raises(BundleRejected, match="not a relative path inside the bundle"):
        load_announced(escape, 1, QualityGate(), None, settings)


def test_the_aws_credential_chain_is_used_when_no_keys_are_set(
        endpoint: str, tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = new_bucket(endpoint)
    s = Settings(bundle_store=f"s3://{bucket}", s3_endpoint_url=endpoint, data_dir=tmp_path)
    a = open_store(s).publish(tiny_bundle_dir)
    assert a.uri == f"s3://{bucket}/{a.version}"  # no prefix: versions at the bucket's top
    assert load_announced(a, 1, QualityGate(), None, s).version == a.version
    got = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    assert any(o["Key"] == f"{a.version}/{MANIFEST}" for o in got["Contents"])


def test_store_settings_are_checked(tmp_path: Path) -> None:
    assert Settings(bundle_store=tmp_path).bundle_store == str(tmp_path)  # a Path still works
    assert Settings(bundle_store="file:///x/y").bundle_store == "file:///x/y"
    with pytest.raises(ConfigError, match="names no bucket"):
        Settings(bundle_store="s3:///prefix")
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        Settings(bundle_store="gs://bucket/prefix")
    with pytest.raises(ConfigError, match="go together"):
        Settings(s3_access_key_id="k")
    a = open_store(Settings(bundle_store="file://" + str(tmp_path / "s")))
    assert a.path("v1") == tmp_path / "s" / "v1"


def test_an_s3_announcement_without_settings_is_refused() -> None:
    a = Announcement("v1", "s3://bucket/models/v1", "0" * 64, 0)
    with pytest.raises(BundleRejected, match="uri: an s3:// bundle needs the settings"):
        load_announced(a, 1, QualityGate(), None)
