"""Unit tests of :mod:`cli.waiting`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.waiting import ProcessExited, WaitTimedOut, poll_until


def test_returns_the_first_value_that_satisfies() -> None:
    seen = iter(range(10))
    assert poll_until(lambda: next(seen), lambda v: v >= 3, timeout=5, procs=[], what="3",
                      interval=0) == 3


def test_times_out_with_the_last_value() -> None:
    with pytest.raises(WaitTimedOut, match="waiting for never; last seen: 7"):
        poll_until(lambda: 7, lambda v: False, timeout=0.05, procs=[], what="never", interval=0.01)


def test_a_dead_process_ends_the_wait_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(ProcessExited, match="exited with 3 while waiting for ready"):
        poll_until(lambda: 0, lambda v: False, timeout=60, procs=[proc], what="ready")

