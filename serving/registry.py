"""The model registry: the bundle store, the announcement format, publishing and rollback.

This is the one place a bundle is *published*: the trainer (``streamrec train
--publish``), ``streamrec publish`` and ``rollback`` all come here. Loading and
validating a bundle is :mod:`serving.bundle`; the worker's side of an
announcement (listen, validate, swap) is :mod:`streams.hotswap`.

Store layout (``STREAMREC_BUNDLE_STORE``: a directory, or ``s3://bucket/prefix``)::

    {root}/{version}/manifest.json, encoder.onnx, …   one immutable bundle per version

In a directory store (:class:`BundleStore`) a version directory is written under a
temporary name and renamed into place, so a reader never sees half a bundle. In an
S3 store (:class:`S3BundleStore`, transfers in :mod:`serving.object_store`) the
manifest is uploaded last and a version exists only once it is there; a worker
downloads an announced version into its data directory and checks every file's
sha256 before loading it. Which version is *current* is not a file:
it is the last announcement on the model-updates topic, so every worker, and
the ``models`` command, agree on it. Announcements are keyed by version, so the
topic may be compacted and still end with the current one. A worker loads an
announced bundle through :func:`load_announced`: the directory must be the one
announced (manifest sha256, version), then pass every check of
:func:`serving.bundle.load_bundle` and the quality gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaProducer

from serving import experiments, object_store
from serving.bundle import DEFAULT_CACHE_MB, ModelBundle, QualityGate, load_bundle
from serving.experiments import KIND as EXPERIMENT
from serving.experiments import Experiment
from serving.manifest import MANIFEST, Manifest, decode_manifest
from streamrec.errors import BundleError, BundleRejected, ConfigError
from streamrec.files import atomic_directory
from streamrec.kafka import client_kwargs, drain, ensure_topics, partition_reader
from streamrec.settings import Settings

log = logging.getLogger(__name__)


class Announcement(msgspec.Struct, frozen=True):
    """What the trainer announces on the model-updates topic."""

    version: str
    uri: str  # file:///abs/path/to/version/dir or s3://bucket/prefix/version
    manifest_sha256: str
    published_at: int  # epoch ms
    reason: str = "publish"  # "publish" or "rollback"


def encode_announcement(a: Announcement) -> bytes:
    return msgspec.json.encode(a)


def decode_announcement(data: bytes) -> Announcement:
    return msgspec.json.decode(data, type=Announcement)


def uri_to_path(uri: str) -> Path:
    """The directory of a ``file://`` URI (an ``s3://`` one is downloaded first:
    :func:`local_copy`)."""
    if not uri.startswith("file://"):
        raise BundleError(f"unsupported bundle URI {uri!r}: a directory store's is file://")
    return Path(uri.removeprefix("file://"))


def local_copy(uri: str, version: str, manifest_sha: str, settings: Settings | None) -> Path:
    """The announced bundle's directory on this machine: a ``file://`` URI's own, or an
    ``s3://`` one downloaded (and every sha256 checked) into the data directory."""
    if uri.startswith(object_store.SCHEME):
        if settings is None:
            raise BundleError("an s3:// bundle needs the settings (endpoint, credentials)")
        s3 = object_store.client(settings)
        return object_store.download_bundle(s3, object_store.S3Location.parse(uri), version,
                                            manifest_sha, object_store.cache_dir(settings))
    return uri_to_path(uri)


def manifest_sha256(bundle_dir: Path) -> str:
    return hashlib.sha256((bundle_dir / MANIFEST).read_bytes()).hexdigest()


class Store(Protocol):
    """What publishing, rollback and experiments need of a bundle store."""

    def publish(self, bundle_dir: Path) -> Announcement: ...

    def announcement(self, version: str, reason: str = "publish") -> Announcement: ...

    def versions(self) -> list[Manifest]: ...

    def path(self, version: str) -> Path: ...


@dataclass(frozen=True)
class BundleStore:
    """One directory per version (``root``: a path, or a ``file://`` URI)."""

    root: Path

    def __post_init__(self) -> None:
        root = str(self.root)
        object.__setattr__(self, "root", Path(root.removeprefix("file://")))

    def path(self, version: str) -> Path:
        return self.root / version

    def publish(self, bundle_dir: Path) -> Announcement:
        """Copy ``bundle_dir`` into the store (atomically) and return its announcement."""
        manifest = decode_manifest((bundle_dir / MANIFEST).read_bytes())
        target = self.path(manifest.version)
        if not target.exists():
            with atomic_directory(target, replace=False) as tmp:
                shutil.copytree(bundle_dir, tmp, dirs_exist_ok=True)
        return self.announcement(manifest.version)

    def announcement(self, version: str, reason: str = "publish") -> Announcement:
        target = self.path(version)
        if not (target / MANIFEST).is_file():
            raise BundleError(f"version {version} is not in the store at {self.root}")
        return Announcement(version, f"file://{target.resolve()}", manifest_sha256(target),
                            int(time.time() * 1000), reason)

    def versions(self) -> list[Manifest]:
        """Manifests of every stored version, oldest first."""
        out = []
        for d in sorted(self.root.glob("*/" + MANIFEST)) if self.root.exists() else []:
            if not d.parent.name.startswith("."):
                out.append(decode_manifest(d.read_bytes()))
        return sorted(out, key=lambda m: m.created_at)


@dataclass(frozen=True)
class S3BundleStore:
    """One key prefix per version in a bucket (``s3://bucket/prefix``); the manifest is
    written last, so a version without one (an upload stopped halfway) does not exist.
    ``path`` downloads a version (checked) into the data directory's cache."""

    location: object_store.S3Location
    settings: Settings
    _client: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def s3(self) -> Any:
        if not self._client:
            self._client.append(object_store.client(self.settings))
        return self._client[0]

    def _manifest(self, version: str) -> bytes | None:
        try:
            return object_store.get_bytes(self.s3, self.location.child(version), MANIFEST)
        except object_store.transfer_errors() as e:
            raise BundleError(f"{self.location.uri}: {e}") from None

    def publish(self, bundle_dir: Path) -> Announcement:
        """Upload ``bundle_dir``'s files, then its manifest; a version already stored with
        the same manifest is not uploaded again, one with another manifest is refused."""
        manifest_bytes = (bundle_dir / MANIFEST).read_bytes()
        version = decode_manifest(manifest_bytes).version
        stored = self._manifest(version)
        if stored is not None and stored != manifest_bytes:
            raise BundleError(f"version {version} is already in {self.location.uri} with "
                              "another manifest: versions are immutable")
        if stored is None:
            try:
                object_store.upload_bundle(self.s3, self.location.child(version), bundle_dir,
                                           manifest_bytes)
            except object_store.transfer_errors() as e:
                raise BundleError(f"uploading {version} to {self.location.uri} failed (nothing "
                                  f"announced; publish again): {e}") from None
            log.info("uploaded bundle %s to %s", version, self.location.child(version).uri)
        return self.announcement(version)

    def announcement(self, version: str, reason: str = "publish") -> Announcement:
        data = self._manifest(version)
        if data is None:
            raise BundleError(f"version {version} is not in the store at {self.location.uri} "
                              "(no manifest: never published, or an upload that did not finish)")
        return Announcement(version, self.location.child(version).uri,
                            hashlib.sha256(data).hexdigest(), int(time.time() * 1000), reason)

    def versions(self) -> list[Manifest]:
        try:
            found = object_store.list_versions(self.s3, self.location)
        except object_store.transfer_errors() as e:
            raise BundleError(f"{self.location.uri}: {e}") from None
        out = [decode_manifest(data) for v in found if (data := self._manifest(v)) is not None]
        return sorted(out, key=lambda m: m.created_at)

    def path(self, version: str) -> Path:
        a = self.announcement(version)
        return local_copy(a.uri, version, a.manifest_sha256, self.settings)


def open_store(settings: Settings) -> Store:
    """The store ``STREAMREC_BUNDLE_STORE`` names: a directory or an S3 bucket and prefix."""
    where = str(settings.bundle_store)
    if where.startswith(object_store.SCHEME):
        return S3BundleStore(object_store.S3Location.parse(where), settings)
    return BundleStore(Path(where.removeprefix("file://")))


def load_announced(a: Announcement, threads: int, gate: QualityGate,
                   current: ModelBundle | None, settings: Settings | None = None) -> ModelBundle:
    """Validate an announced bundle fully (blocking: run off the event loop). An ``s3://``
    bundle is downloaded first (``settings``: the endpoint, credentials, data directory)."""
    try:
        path = local_copy(a.uri, a.version, a.manifest_sha256, settings)
        actual = manifest_sha256(path)
    except (BundleError, OSError) as e:
        if isinstance(e, BundleRejected):
            raise
        raise BundleRejected(a.version, "uri", str(e)) from None
    if actual != a.manifest_sha256:
        raise BundleRejected(a.version, "announcement", f"manifest sha256 {actual[:12]}… is not the "
                             f"announced {a.manifest_sha256[:12]}…", MANIFEST)
    bundle = load_bundle(path, threads, settings.encoder_cache_mb if settings is not None else DEFAULT_CACHE_MB)
    if bundle.version != a.version:
        raise BundleRejected(a.version, "announcement", f"directory holds version {bundle.version}")
    gate.check(bundle, current)
    return bundle


class _Kind(msgspec.Struct):
    kind: str = "model"  # model announcements carry no kind (the first format)


_kind = msgspec.json.Decoder(_Kind)


def decode_update(value: bytes | None) -> Announcement | Experiment | None:
    """A model-updates record: a model announcement or an experiment's state
    (:mod:`serving.experiments`); None (logged) for a malformed one."""
    try:
        kind = _kind.decode(value or b"").kind
        if kind == EXPERIMENT:
            return experiments.check(experiments.decode(value or b""))
        return decode_announcement(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError, ConfigError) as e:
        log.error("ignoring malformed record on the model-updates topic: %s", e)
        return None


def decode_or_none(value: bytes | None) -> Announcement | None:
    """The model announcement in a record's value; None for an experiment's record and
    (logged) for a malformed one."""
    a = decode_update(value)
    return a if isinstance(a, Announcement) else None


async def update_history(settings: Settings) -> tuple[list[Announcement], list[Experiment]]:
    """Every model announcement and every experiment record so far, oldest first."""
    consumer, tps = await partition_reader(settings, settings.model_updates_topic,
                                           default_partitions={0})
    models: list[Announcement] = []
    exps: list[Experiment] = []
    try:
        async for m in drain(consumer, tps):
            a = decode_update(m.value)
            if isinstance(a, Announcement):
                models.append(a)
            elif a is not None:
                exps.append(a)
    finally:
        await consumer.stop()
    return models, exps


async def announcement_history(settings: Settings) -> list[Announcement]:
    """Every model announcement so far, oldest first (for ``models`` and ``rollback``)."""
    return (await update_history(settings))[0]


async def announce(settings: Settings, a: Announcement) -> None:
    await _send(settings, encode_announcement(a), a.version.encode())


async def announce_experiment(settings: Settings, exp: Experiment) -> None:
    """Announce an experiment's state (started, changed, stopped) to every worker."""
    await ensure_topics(settings, [settings.model_updates_topic])
    await _send(settings, experiments.encode(experiments.check(exp)),
                experiments.record_key(exp.name))


async def _send(settings: Settings, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.model_updates_topic, value, key=key)
    finally:
        await producer.stop()


async def publish_bundle(settings: Settings, bundle_dir: Path, *, validate: bool = True) -> Announcement:
    """Copy a bundle into the store and announce it (``validate``: refuse what workers would)."""
    loop = asyncio.get_running_loop()
    if validate:
        await loop.run_in_executor(None, load_bundle, bundle_dir)
    a = await loop.run_in_executor(None, open_store(settings).publish, bundle_dir)
    await ensure_topics(settings, [settings.model_updates_topic])
    await announce(settings, a)
    return a


async def rollback(settings: Settings, version: str | None = None) -> Announcement:
    """Re-announce ``version`` (default: the last one announced before the current one)."""
    history = [a.version for a in await announcement_history(settings)]
    if version is None:
        current = history[-1] if history else None
        earlier = [v for v in history if v != current]
        if not earlier:
            raise BundleError("nothing to roll back to: fewer than two versions were ever announced")
        version = earlier[-1]
    a = open_store(settings).announcement(version, reason="rollback")
    await announce(settings, a)
    return a


@dataclass(frozen=True)
class StoredVersion:
    manifest: Manifest
    current: bool

    def row(self) -> str:
        m = self.manifest
        try:
            full = m.metrics["test"]["full"]
            metrics = f"test HR@10 {full['hr@10']:.4f} NDCG@10 {full['ndcg@10']:.4f}"
        except (KeyError, TypeError):
            metrics = "no test metrics"
        return f"{'*' if self.current else ' '} {m.version}  {m.created_at}  {m.model}  {metrics}"


async def stored_versions(settings: Settings) -> list[StoredVersion]:
    """Every stored version, oldest first, the last announced one marked current."""
    history = await announcement_history(settings)
    current = history[-1].version if history else None
    return [StoredVersion(m, m.version == current)
            for m in open_store(settings).versions()]
