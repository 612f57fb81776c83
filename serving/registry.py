"""The bundle store: one directory per version under a root, plus announcements.

Layout::

    {root}/{version}/manifest.json, encoder.onnx, …   one immutable bundle per version

A version directory is written under a temporary name and renamed into place,
so a reader never sees half a bundle. Which version is *current* is not a file:
it is the last announcement on the model-updates topic (see
:mod:`streams.models`), so every worker, and the ``models`` command, agree on it.
The interface is deliberately small (publish, path, versions) so an object
store can implement it too.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from serving.manifest import MANIFEST, Manifest, decode_manifest
from streamrec.errors import BundleError


class Announcement(msgspec.Struct, frozen=True):
    """What the trainer announces on the model-updates topic."""

    version: str
    uri: str  # file:///abs/path/to/version/dir
    manifest_sha256: str
    published_at: int  # epoch ms
    reason: str = "publish"  # "publish" or "rollback"


def encode_announcement(a: Announcement) -> bytes:
    return msgspec.json.encode(a)


def decode_announcement(data: bytes) -> Announcement:
    return msgspec.json.decode(data, type=Announcement)


def uri_to_path(uri: str) -> Path:
    if not uri.startswith("file://"):
        raise BundleError(f"unsupported bundle URI {uri!r}: only file:// is implemented")
    return Path(uri.removeprefix("file://"))


def manifest_sha256(bundle_dir: Path) -> str:
    return hashlib.sha256((bundle_dir / MANIFEST).read_bytes()).hexdigest()


@dataclass(frozen=True)
class BundleStore:
    root: Path

    def path(self, version: str) -> Path:
        return self.root / version

    def publish(self, bundle_dir: Path) -> Announcement:
        """Copy ``bundle_dir`` into the store (atomically) and return its announcement."""
        manifest = decode_manifest((bundle_dir / MANIFEST).read_bytes())
        target = self.path(manifest.version)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.", dir=self.root))
            shutil.copytree(bundle_dir, tmp, dirs_exist_ok=True)
            tmp.chmod(0o755)
            try:
                tmp.rename(target)
            except OSError:  # a concurrent publish of the same version won
                shutil.rmtree(tmp, ignore_errors=True)
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
