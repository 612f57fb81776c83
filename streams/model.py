"""The worker's reference to the bundle it serves.

Swapping is one attribute assignment on the event loop, so a batch that took
``current`` before a swap finishes on that bundle, and every batch after it
uses the new one (contract 2: atomic swap, never a gap).
"""

from __future__ import annotations

import asyncio
import time

from serving.bundle import ModelBundle


class ModelHolder:
    def __init__(self) -> None:
        self._bundle: ModelBundle | None = None
        self._ready = asyncio.Event()
        self.swapped_at: float | None = None

    @property
    def current(self) -> ModelBundle:
        if self._bundle is None:
            raise RuntimeError("no model bundle loaded yet; await wait_ready() first")
        return self._bundle

    @property
    def loaded(self) -> bool:
        return self._bundle is not None

    def swap(self, bundle: ModelBundle) -> None:
        self._bundle = bundle
        self.swapped_at = time.time()
        self._ready.set()

    async def wait_ready(self) -> ModelBundle:
        await self._ready.wait()
        return self.current
