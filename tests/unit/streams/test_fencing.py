"""Unit tests of :mod:`streams.fencing`."""

from __future__ import annotations

import asyncio

from streams.fencing import Fencing


def test_fencing_waits_for_the_epoch_and_a_later_assignment_wins() -> None:
    async def run() -> list[int]:
        counter = iter(range(1, 100))
        gate = asyncio.Event()

        async def incr() -> int:
            await gate.wait()  # Redis "down" until the gate opens
            return next(counter)

        f = Fencing(incr)
        f.on_assigned()
        waiter = asyncio.create_task(f.current())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # no batch is applied without this assignment's epoch
        f.on_assigned()  # a second rebalance before the first epoch arrived
        gate.set()
        first = await waiter
        f.on_assigned()
        return [first, await f.current()]

    first, second = asyncio.run(run())
    assert second > first

