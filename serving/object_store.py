"""Bundles on S3, or any service that speaks its API: the transfers behind an ``s3://`` store.

Layout, the same as a directory store's::

    s3://{bucket}/{prefix}/{version}/manifest.json, encoder.onnx, …

**Upload** (:func:`upload_bundle`) puts every file the manifest lists, each checked
against the manifest's sha256 first, and the manifest *last*. A version exists when its
manifest does: an upload stopped halfway leaves files without a manifest, which no
listing shows, no announcement can name (:mod:`serving.registry` reads the manifest to
announce), and the next publish of that version uploads again.

**Download** (:func:`download_bundle`) is the worker's side: the manifest first, checked
against the announcement's sha256, then every file it lists, each hashed as it arrives
and compared with the manifest, into a temporary directory under the worker's data
directory that is renamed into place only when all of them match. A bundle that fails
is refused (:class:`streamrec.errors.BundleRejected`) before anything loads it.

Credentials come from the settings (``STREAMREC_S3_*``) or, when those are unset, from
boto3's chain (``AWS_*`` variables, shared files, a pod or instance role).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from serving.manifest import MANIFEST, Manifest, decode_manifest
from streamrec.errors import BundleError, BundleRejected
from streamrec.files import atomic_directory, sha256_file
from streamrec.settings import Settings

SCHEME = "s3://"
CHUNK = 1 << 20
# Downloaded versions kept in the cache beside the one just fetched (a rollback to one of
# them needs no download); older ones are removed.
KEEP_CACHED = 3


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing ``/``; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith(SCHEME):
            raise BundleError(f"{uri!r} is not an s3:// URI")
        bucket, _, prefix = uri.removeprefix(SCHEME).partition("/")
        if not bucket:
            raise BundleError(f"{uri!r} names no bucket (s3://bucket/prefix)")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, self.key(name))

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


def client(settings: Settings) -> Any:
    """An S3 client from the settings' endpoint, region and keys (boto3's chain for what is
    unset). boto3 is imported here: only an s3:// store needs it."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {}
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_region:
        kwargs["region_name"] = settings.s3_region
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        kwargs["aws_access_key_id"] = settings.s3_access_key_id
        kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                    read_timeout=60)
    return boto3.session.Session().client("s3", config=config, **kwargs)


def transfer_errors() -> tuple[type[Exception], ...]:
    """What a failed S3 call raises: botocore's errors (no credentials, no connection, a
    refused request)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def _missing(e: Exception) -> bool:
    code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def get_bytes(s3: Any, loc: S3Location, name: str) -> bytes | None:
    """The object ``{prefix}/{name}``; None when there is none."""
    try:
        body = s3.get_object(Bucket=loc.bucket, Key=loc.key(name))["Body"]
    except transfer_errors() as e:
        if _missing(e):
            return None
        raise
    with body:
        data: bytes = body.read()
    return data


def bundle_files(bundle_dir: Path, manifest: Manifest) -> list[tuple[str, Path]]:
    """The bundle's files as the manifest lists them, each checked against its sha256;
    BundleError for a missing, changed or unlisted file (workers would refuse the bundle)."""
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    unlisted = sorted(on_disk - set(manifest.files) - {MANIFEST})
    if unlisted:
        raise BundleError(f"{bundle_dir}: {unlisted[0]} is not listed in the manifest")
    out = []
    for rel, digest in sorted(manifest.files.items()):
        path = bundle_dir / _safe(manifest.version, rel)
        if not path.is_file():
            raise BundleError(f"{bundle_dir}: {rel} is listed in the manifest but missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{bundle_dir}: {rel} does not match the manifest's sha256")
        out.append((rel, path))
    return out


def upload_bundle(s3: Any, version_loc: S3Location, bundle_dir: Path, manifest_bytes: bytes) -> None:
    """Upload every file of ``bundle_dir``, then its manifest (the version exists from then)."""
    manifest = decode_manifest(manifest_bytes)
    for rel, path in bundle_files(bundle_dir, manifest):
        s3.upload_file(str(path), version_loc.bucket, version_loc.key(rel),
                       ExtraArgs={"Metadata": {"sha256": manifest.files[rel]}})
    s3.put_object(Bucket=version_loc.bucket, Key=version_loc.key(MANIFEST), Body=manifest_bytes,
                  ContentType="application/json")


def list_versions(s3: Any, loc: S3Location) -> list[str]:
    """The versions under ``loc`` that have a manifest (complete uploads only)."""
    versions = []
    prefix = f"{loc.prefix}/" if loc.prefix else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rest = obj["Key"].removeprefix(prefix)
            version, _, name = rest.partition("/")
            if name == MANIFEST and version and not version.startswith("."):
                versions.append(version)
    return versions


def _safe(version: str, rel: str) -> str:
    """A manifest's relative path, refused when it could leave the bundle's directory."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise BundleRejected(version, "files", "not a relative path inside the bundle", rel)
    return rel


def download_bundle(s3: Any, version_loc: S3Location, version: str, manifest_sha256: str,
                    cache: Path) -> Path:
    """Download the announced bundle into ``cache/{version}`` and return that directory:
    the manifest must have ``manifest_sha256`` and every file its manifest sha256. A
    directory already there with the same manifest is reused (loading re-checks its files)."""
    if not version or version != PurePosixPath(version).name or version.startswith("."):
        raise BundleRejected(version, "uri", "not a usable version name")
    target = cache / version
    if (target / MANIFEST).is_file() and sha256_file(target / MANIFEST) == manifest_sha256:
        os.utime(target)
        return target
    try:
        manifest_bytes = get_bytes(s3, version_loc, MANIFEST)
    except transfer_errors() as e:
        raise BundleRejected(version, "download", f"{version_loc.uri}/{MANIFEST}: {e}", MANIFEST) from None
    if manifest_bytes is None:
        raise BundleRejected(version, "download", f"no manifest at {version_loc.uri} (not "
                             "published, or an upload that did not finish)", MANIFEST)
    actual = hashlib.sha256(manifest_bytes).hexdigest()
    if actual != manifest_sha256:
        raise BundleRejected(version, "announcement", f"manifest sha256 {actual[:12]}… is not the "
                             f"announced {manifest_sha256[:12]}…", MANIFEST)
    try:
        manifest = decode_manifest(manifest_bytes)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BundleRejected(version, "manifest", str(e), MANIFEST) from None
    with atomic_directory(target, replace=True) as tmp:
        for rel, digest in sorted(manifest.files.items()):
            _download_file(s3, version_loc, version, _safe(version, rel), digest, tmp / rel)
        (tmp / MANIFEST).write_bytes(manifest_bytes)
    _prune(cache, keep=target)
    return target


def _download_file(s3: Any, loc: S3Location, version: str, rel: str, digest: str,
                   dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        body = s3.get_object(Bucket=loc.bucket, Key=loc.key(rel))["Body"]
        with body, dest.open("wb") as f:
            for chunk in iter(lambda: body.read(CHUNK), b""):
                h.update(chunk)
                f.write(chunk)
    except transfer_errors() as e:
        what = "missing from the store" if _missing(e) else str(e)
        raise BundleRejected(version, "download", what, rel) from None
    if h.hexdigest() != digest:
        raise BundleRejected(version, "sha256", f"downloaded sha256 {h.hexdigest()[:12]}… is not "
                             f"the manifest's {digest[:12]}…", rel)


def _prune(cache: Path, keep: Path) -> None:
    """Remove cached versions beyond the newest :data:`KEEP_CACHED` besides ``keep``."""
    others = sorted((d for d in cache.iterdir() if d.is_dir() and d != keep
                     and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for d in others[KEEP_CACHED:]:
        shutil.rmtree(d, ignore_errors=True)


def cache_dir(settings: Settings) -> Path:
    """Where downloaded bundles go: ``bundles/`` in the data directory (Faust's default,
    ``{app_id}-data``, when ``STREAMREC_DATA_DIR`` is unset)."""
    return (settings.data_dir or Path(f"{settings.app_id}-data")) / "bundles"
