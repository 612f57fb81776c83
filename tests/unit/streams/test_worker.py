"""Unit tests of :mod:`streams.worker`."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker import Pipeline


class Msg:
    def __init__(self) -> None:
        self.refs = 1  # the stream's own reference, dropped by Faust's ack after the body

    def incref(self) -> None:
        self.refs += 1


class Ev:
    def __init__(self, n: int) -> None:
        self.n, self.message = n, Msg()


class FakeWorker:
    """prepare() records order; finish() of batch n waits until the test releases it."""

    def __init__(self) -> None:
        self.prepared: list[int] = []
        self.release: dict[int, asyncio.Event] = {}
        self.running: set[int] = set()
        self.max_running = 0
        self.fail: set[int] = set()

    async def prepare(self, events: list[Ev]) -> int:
        self.prepared.append(events[0].n)
        return events[0].n

    def let_finish(self, batch: int) -> None:
        self.release.setdefault(batch, asyncio.Event()).set()

    async def finish(self, n_records: int, batch: int) -> None:
        self.running.add(batch)
        self.max_running = max(self.max_running, len(self.running))
        await self.release.setdefault(batch, asyncio.Event()).wait()
        self.running.discard(batch)
        if batch in self.fail:
            raise RuntimeError(f"batch {batch} failed")


class Acks:
    """The stream's ack: drops the reference the pipeline added and records the batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def __call__(self, e: Ev) -> None:
        e.message.refs -= 1
        self.batches.append(e.n)


def batch(n: int) -> list[Ev]:
    return [Ev(n), Ev(n)]


def test_batches_overlap_up_to_depth_and_ack_only_when_finished() -> None:
    async def scenario() -> None:
        w, acks = FakeWorker(), Acks()
        p = Pipeline(w, acks, depth=2)  # type: ignore[arg-type]
        b0, b1, b2 = batch(0), batch(1), batch(2)
        await p.submit(b0)  # returns at once: one batch in flight
        assert w.prepared == [0] and all(e.message.refs == 2 for e in b0) and not acks.batches
        second = asyncio.create_task(p.submit(b1))  # applied, then waits: 2 in flight
        await asyncio.sleep(0.01)
        assert w.prepared == [0, 1] and not second.done()
        w.let_finish(1)  # a later batch may finish first
        await asyncio.wait_for(second, 1)
        assert acks.batches == [1, 1]
        third = asyncio.create_task(p.submit(b2))  # 0 and 2 in flight: waits
        await asyncio.sleep(0.01)
        assert not third.done() and w.max_running == 2
        for n in (0, 2):
            w.let_finish(n)
        await asyncio.wait_for(third, 1)
        await p.drain()
        assert sorted(acks.batches) == [0, 0, 1, 1, 2, 2] and w.prepared == [0, 1, 2]
        assert all(e.message.refs == 1 for e in b0 + b1 + b2)  # Faust's own ack drops the last

    asyncio.run(scenario())


def test_depth_one_is_strictly_serial() -> None:
    async def scenario() -> None:
        w = FakeWorker()
        p = Pipeline(w, Acks(), depth=1)  # type: ignore[arg-type]
        first = asyncio.create_task(p.submit(batch(0)))
        await asyncio.sleep(0.01)
        assert not first.done()  # waits for its own finish
        w.let_finish(0)
        await asyncio.wait_for(first, 1)
        assert w.max_running == 1

    asyncio.run(scenario())


def test_a_failed_batch_is_not_acked_and_its_error_surfaces() -> None:
    async def scenario() -> None:
        w, acks = FakeWorker(), Acks()
        p = Pipeline(w, acks, depth=2)  # type: ignore[arg-type]
        w.fail.add(0)
        await p.submit(batch(0))
        w.let_finish(0)
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="batch 0 failed"):
            await p.submit(batch(1))
        assert not acks.batches and w.prepared == [0]  # nothing after the failure is applied

    asyncio.run(scenario())


def test_settle_cancels_what_does_not_finish_in_time() -> None:
    async def scenario() -> None:
        w, acks = FakeWorker(), Acks()
        p = Pipeline(w, acks, depth=4)  # type: ignore[arg-type]
        await p.submit(batch(0))
        await p.submit(batch(1))
        w.let_finish(0)
        await p.settle(timeout=0.05)
        assert acks.batches == [0, 0] and not p.inflight  # batch 1 cancelled, never acked

    asyncio.run(scenario())



class DeliveringWorker(FakeWorker):
    """finish() returns at once, with a delivery (an impression) the test completes."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries: dict[int, asyncio.Future[None]] = {}

    async def finish(self, n_records: int, batch: int) -> list[asyncio.Future[None]]:  # type: ignore[override]
        fut = self.deliveries[batch] = asyncio.get_running_loop().create_future()
        return [fut]


def test_pending_deliveries_hold_the_ack_but_not_the_next_batch() -> None:
    async def scenario() -> None:
        w, acks = DeliveringWorker(), Acks()
        p = Pipeline(w, acks, depth=1)  # type: ignore[arg-type]
        await p.submit(batch(0))
        await asyncio.wait_for(p.submit(batch(1)), 1)  # not held by batch 0's delivery
        await asyncio.sleep(0.01)
        assert w.prepared == [0, 1] and acks.batches == []  # nothing delivered: nothing acked
        w.deliveries[1].set_result(None)
        await asyncio.sleep(0.01)
        assert acks.batches == [1, 1]
        w.deliveries[0].set_result(None)
        await asyncio.wait_for(p.drain(), 1)
        assert sorted(acks.batches) == [0, 0, 1, 1]

    asyncio.run(scenario())


def test_a_failed_delivery_is_raised_and_its_batch_never_acked() -> None:
    async def scenario() -> None:
        w, acks = DeliveringWorker(), Acks()
        p = Pipeline(w, acks, depth=1)  # type: ignore[arg-type]
        await p.submit(batch(0))
        await asyncio.sleep(0.01)
        w.deliveries[0].set_exception(RuntimeError("broker down"))
        await asyncio.sleep(0.01)
        try:
            await p.submit(batch(1))
        except RuntimeError as e:
            assert "broker down" in str(e)
        else:
            raise AssertionError("the failed delivery was not raised")
        assert acks.batches == []

    asyncio.run(scenario())
