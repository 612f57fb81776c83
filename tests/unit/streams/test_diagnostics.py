"""Unit tests of :mod:`streams.diagnostics`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from streams.diagnostics import dump_tasks


async def _gen(gate: asyncio.Event) -> AsyncIterator[int]:
    await gate.wait()
    yield 1


async def _consume(gate: asyncio.Event) -> None:
    async for _ in _gen(gate):
        pass


async def _outer(gate: asyncio.Event) -> None:
    await _consume(gate)


def test_dump_shows_the_chain_of_awaits_through_an_async_generator() -> None:
    async def main() -> str:
        gate = asyncio.Event()
        task = asyncio.create_task(_outer(gate), name="stuck-one")
        await asyncio.sleep(0.01)
        text = dump_tasks()
        gate.set()
        await task
        return text

    text = asyncio.run(main())
    section = text.split("--- stuck-one\n")[1].split("---")[0]
    names = [line.rsplit(" ", 1)[-1] for line in section.strip().splitlines()]
    assert names[:3] == ["_outer", "_consume", "_gen"], section
    assert "wait" in names[3:], section

