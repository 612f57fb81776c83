"""Sampling profiles of benchmark workers with py-spy, summarised where the time goes.

``streamrec bench --profile`` records each streamrec worker with ``py-spy record``
over the measured window (the backlog drain), in py-spy's collapsed ("raw")
format, and keeps two summaries in the results file:

- ``threads``: each thread's share of the samples (the event loop's ``MainThread``
  and the compute pool's threads), and within it:
- ``self``: the functions most often on top of a sampled stack (where the time was
  spent), each as a share of that thread's samples;
- ``by_package``: the same samples by the package of the top frame (our own
  modules by their top-level package: ``streams``, ``serving``, ``streamrec``),
  so that "Faust's machinery", "redis-py" and "our compute" read as one line each.

Idle threads are not sampled (py-spy's default); a thread waiting in ``select``
counts, since that is a system call. The shares are of samples, taken at the same
rate in every thread, so a thread's share is its share of the time the process's
threads were busy.

The collapsed file itself is kept beside the logs, for a flame graph
(``py-spy``'s own SVG, or any tool that reads collapsed stacks).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import ConfigError

# "func (path/to/file.py)" with --function; "func (path/to/file.py:123)" without
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")
_OURS = ("streams", "serving", "streamrec", "cli", "bench", "training")


def package_of(path: str) -> str:
    """The package a frame's file belongs to. py-spy shortens a path to the part below
    its ``sys.path`` entry (``faust/streams.py``, ``selectors.py``), so the package is
    the first part; a full path is cut after ``site-packages`` or the standard library."""
    parts = Path(path).parts
    cut = [n for n, p in enumerate(parts) if p == "site-packages" or re.fullmatch(r"python3\.\d+", p)]
    if cut:
        parts = parts[cut[-1] + 1:]
    if not parts:
        return "?"
    for top in _OURS:  # our own code run from a checkout: its package, wherever it lies
        if top in parts[:-1]:
            return top
    return parts[0].removesuffix(".py")


_THREAD = re.compile(r"^thread \(\w+\): (?P<name>.*)$")


@dataclass(frozen=True)
class Thread:
    name: str
    share: float  # of all samples
    top_self: list[tuple[str, float]]  # (function (package), share of the thread's samples)
    by_package: list[tuple[str, float]]

    def as_dict(self) -> dict[str, object]:
        return {"thread": self.name, "share": round(self.share, 4),
                "self": [{"function": f, "share": round(s, 4)} for f, s in self.top_self],
                "by_package": [{"package": p, "share": round(s, 4)} for p, s in self.by_package]}


@dataclass(frozen=True)
class Summary:
    samples: int
    threads: list[Thread]  # busiest first

    def as_dict(self) -> dict[str, object]:
        return {"samples": self.samples, "threads": [t.as_dict() for t in self.threads]}


def _thread_name(frame: str) -> str:
    """A thread's name from py-spy's ``thread (id): name`` frame; a pool's threads
    (``ThreadPoolExecutor-0_1``) share their pool's name."""
    m = _THREAD.match(frame)
    name = m["name"] if m else "?"
    return re.sub(r"_\d+$", "", name)


def summarize(collapsed: Iterable[str], top: int = 20) -> Summary:
    """Summarise py-spy's collapsed stacks recorded with ``--threads`` (``thread (id):
    name;frame;… count`` per line): per thread, the ``top`` functions by self samples
    and every package by self samples, as shares."""
    by_func: dict[str, Counter[str]] = {}
    by_pkg: dict[str, Counter[str]] = {}
    total = 0
    for line in collapsed:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = _thread_name(frames[0])
        m = _FRAME.match(frames[-1])
        func, pkg = (m["func"], package_of(m["file"])) if m else (frames[-1], "?")
        by_func.setdefault(thread, Counter())[f"{func} ({pkg})"] += n
        by_pkg.setdefault(thread, Counter())[pkg] += n
        total += n
    threads = []
    for name, funcs in by_func.items():
        t = sum(funcs.values())
        threads.append(Thread(name, t / total, [(f, c / t) for f, c in funcs.most_common(top)],
                              [(p, c / t) for p, c in by_pkg[name].most_common()]))
    return Summary(total, sorted(threads, key=lambda t: -t.share))


class Recording:
    """``py-spy record`` attached to one process until :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise ConfigError("--profile needs py-spy on the PATH (it is in the dev extra: "
                              "`make venv` installs it)")
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        # --nonblocking: sample without pausing the worker, so the profile does not slow
        # the run it measures; --function: one line per function, not per line number
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--format", "raw", "--function", "--threads",
             "--nonblocking",
             "--rate", str(rate), "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self, timeout: float = 30.0) -> Summary:
        """Stop sampling (py-spy writes its file on SIGINT) and summarise the file."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"py-spy did not write {self.out} in {timeout:.0f} s") from None
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace').strip()}")
        with self.out.open() as f:
            return summarize(f)
