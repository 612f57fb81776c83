"""Training progress: a tqdm bar on a terminal, one plain line per epoch anywhere else.

tqdm redraws its bar with carriage returns; written into a log file or a container's
stdout, one run becomes a single line thousands of characters long. :func:`epochs`
decides once, from whether stderr is a terminal, and both forms show the same figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import IO

from tqdm import tqdm


class EpochLine:
    """Iterates ``1..total``; each :meth:`set_postfix` writes the epoch's line,
    ``{desc} epoch {i}/{total}: k=v … ({seconds} s)``, to ``stream`` (None: nowhere)."""

    def __init__(self, total: int, desc: str, stream: IO[str] | None) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.epoch, self.start = 0, time.monotonic()

    def set_postfix(self, **values: str) -> None:
        if self.stream is None:
            return
        figures = " ".join(f"{k}={v}" for k, v in values.items())
        print(f"{self.desc} epoch {self.epoch}/{self.total}: {figures} "
              f"({time.monotonic() - self.start:.1f} s)", file=self.stream, flush=True)

    def __iter__(self) -> Iterator[int]:
        self.start = time.monotonic()
        for epoch in range(1, self.total + 1):
            self.epoch = epoch
            yield epoch


def epochs(total: int, desc: str, enabled: bool = True,
           stream: IO[str] | None = None) -> tqdm[int] | EpochLine:
    """Epochs ``1..total`` with progress on ``stream`` (default stderr): a bar where it is
    a terminal, a line per epoch (at each ``set_postfix``) where it is not, nothing when
    not ``enabled``."""
    out = stream or sys.stderr
    if enabled and out.isatty():
        return tqdm(range(1, total + 1), desc=desc, unit="epoch", file=out)
    return EpochLine(total, desc, out if enabled else None)
