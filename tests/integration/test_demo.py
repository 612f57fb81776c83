"""The main job end to end, small: `streamrec demo` in its own directory, topics and prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings(bundle_path=tmp_path / "bundles" / "current",
                      bundle_store=tmp_path / "bundles" / "store")
    env = {**os.environ, **s.to_env()}
    env.pop("STREAMREC_WORKER_ID", None)
    out = subprocess.run(check=False, args=[sys.executable, "-m", "cli", "demo", "--users", "150", "--items",
                          "80", "--train-minutes", "0.1", "--rate", "0"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "events processed" in out.stdout and "users with recs in Redis   150 of 150" in out.stdout
    assert "dead-lettered              3" in out.stdout
