"""Polling a worker process's reported state until a condition holds (demo, bench, tests)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from streamrec.errors import ProcessExited, WaitTimedOut

__all__ = ["ProcessExited", "WaitTimedOut", "poll_until", "stop_process"]

T = TypeVar("T")


def poll_until(probe: Callable[[], T], done: Callable[[T], bool], *, timeout: float,
               procs: Sequence[subprocess.Popen[bytes]], what: str, interval: float = 0.2) -> T:
    """Call ``probe`` every ``interval`` s until ``done(value)``; return that value.

    Raises ``ProcessExited`` as soon as one of ``procs`` has exited, and
    ``WaitTimedOut`` (with the last value seen) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        for p in procs:
            if p.poll() is not None:
                raise ProcessExited(f"process {p.pid} exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {timeout:g}s waiting for {what}; last seen: {value!r}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Terminate ``proc`` (SIGTERM: a worker shuts down cleanly), killing it after ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
