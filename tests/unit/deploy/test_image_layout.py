"""Unit tests of ``deploy/image-layout.sh``: the tree the Dockerfile builds, built here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICE_UID = 10001


def test_the_image_layout_script_is_what_the_dockerfile_runs() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert "COPY deploy/image-layout.sh /usr/local/bin/streamrec-image-layout" in dockerfile
    assert "RUN streamrec-image-layout /" in dockerfile
    assert "USER streamrec" in dockerfile


@pytest.mark.skipif(os.geteuid() != 0, reason="building the tree sets owners: needs root")
def test_the_service_owns_only_its_data_and_bundle_directories(tmp_path: Path) -> None:
    subprocess.run(["sh", str(ROOT / "deploy/image-layout.sh"), str(tmp_path)], check=True)
    owners = {p: (tmp_path / p).stat().st_uid for p in
              ("app", "var/lib/streamrec", "bundles", "bundles/store")}
    assert owners == {"app": 0, "var/lib/streamrec": SERVICE_UID, "bundles": SERVICE_UID,
                      "bundles/store": SERVICE_UID}
    for p in owners:
        assert (tmp_path / p).stat().st_mode & 0o777 == 0o755
