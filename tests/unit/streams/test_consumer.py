"""The seek guard of ``streams.consumer.SafeSeekConsumer``: when a seek waits for the fetch loop.

Faust's fetch loop and its seek are driven here by hand: the parent class's
``_wait_next_records`` (one fetch) and ``perform_seek`` (the seek itself) are replaced by
stand-ins, so what is tested is only the guard's own bookkeeping. The whole path runs in
the fault suite (``tests/faults``), where the stall this guards against was seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver

from streams.consumer import SEEK_GAVE_UP, SafeSeekConsumer


class Guard(SafeSeekConsumer):
    """The guard alone: no app, no broker."""

    def __init__(self) -> None:  # Faust's Consumer needs a transport; the guard needs none
        self.flow_active = True
        self.can_resume_flow = asyncio.Event()
        self.suspend_flow = asyncio.Event()
        self.seeks: list[float] = []

    async def _seek_uncommitted_to_start(self) -> None:
        pass


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the next fetch returns (the parent's ``_wait_next_records``); seeks are timed."""
    batches: list[Any] = [{"tp": ["record"]}]

    async def wait_next_records(self: Guard, timeout: float) -> Any:
        return batches[0], None

    async def perform_seek(self: Guard) -> None:
        self.seeks.append(time.monotonic())

    monkeypatch.setattr(driver.Consumer, "_wait_next_records", wait_next_records)
    monkeypatch.setattr(driver.Consumer, "perform_seek", perform_seek)
    return batches


def test_records_fetched_while_the_flow_is_stopped_do_not_hold_the_seek(
        fetched: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    # Faust's getmany drops such records and seeks from inside the fetch loop: waiting for
    # the fetch loop there meant waiting for itself until the timeout
    asyncio.run(_stopped_flow(caplog))


async def _stopped_flow(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard()
    guard.settle_timeout_s = 2.0
    guard.stop_flow()
    await guard._wait_next_records(1.0)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await guard.perform_seek()
    assert guard.seeks and guard.seeks[0] - t0 < 0.5
    assert SEEK_GAVE_UP not in caplog.text


def test_records_in_delivery_hold_the_seek_until_the_fetch_loop_is_done(
        fetched: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_in_delivery(fetched, caplog))


async def _in_delivery(fetched: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard()
    guard.settle_timeout_s = 5.0
    await guard._wait_next_records(1.0)  # fetched with the flow on: being delivered

    async def fetch_loop_finishes() -> float:
        await asyncio.sleep(0.2)
        done = time.monotonic()
        fetched[0] = {}
        await guard._wait_next_records(1.0)  # the loop's next fetch: nothing in hand
        return done

    finishing = asyncio.create_task(fetch_loop_finishes())
    with caplog.at_level(logging.WARNING):
        await guard.perform_seek()
    done = await finishing
    assert not guard.flow_active  # the seek stopped the flow; its caller resumes it
    assert guard.seeks and guard.seeks[0] >= done
    assert SEEK_GAVE_UP not in caplog.text


def test_a_fetch_loop_that_never_finishes_is_reported(
        fetched: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_never_finishes(caplog))


async def _never_finishes(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard()
    guard.settle_timeout_s = 0.1
    await guard._wait_next_records(1.0)
    with caplog.at_level(logging.WARNING):
        await guard.perform_seek()
    assert guard.seeks
    assert SEEK_GAVE_UP in caplog.text


@pytest.mark.parametrize("level", ["read_committed", "read_uncommitted"])
def test_the_worker_consumer_gets_the_settings_faust_has_none_for(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    import faust

    from streams.consumer import install_consumer

    monkeypatch.setattr(driver.Transport, "Consumer", driver.Transport.Consumer)  # restored after

    async def build() -> Any:
        install_consumer(7, "slot-1", level)
        app = faust.App("consumer-overrides-test", broker="kafka://127.0.0.1:1")
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # no broker needed
        await consumer.stop()
        return consumer

    consumer = asyncio.run(build())
    assert (consumer._isolation_level, consumer._fetch_max_wait_ms, consumer._group_instance_id) == (level, 7, "slot-1")


def test_an_unknown_isolation_level_is_refused() -> None:
    from streams.consumer import consumer_overrides

    with pytest.raises(ValueError, match="isolation_level must be read_committed or read_uncommitted, not 'dirty'"):
        consumer_overrides(10, None, "dirty")


class Gaps(SafeSeekConsumer):
    """Faust's own offset bookkeeping (``_add_gap``, ``_new_offset``), no app or broker."""

    def __init__(self) -> None:  # the attributes Faust's Consumer.__init__ sets for it
        from collections import defaultdict
        from types import SimpleNamespace

        from intervaltree import IntervalTree

        self._gap = defaultdict(IntervalTree)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = defaultdict(lambda: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))


@pytest.mark.parametrize(("offsets", "commits"), [
    ([0, 3, 4], [1, 5]),  # a hole right after the first record: offsets 1 and 2 never come
    ([0, 5], [1, 6]),
    ([0, 1, 4, 5], [1, 5]),  # a hole later on: Faust's own gap (its commit lags one behind)
    ([0, 2, 3], [1, 4]),  # one offset missing after the first: the commit steps over it
])
def test_commits_step_over_a_hole_after_the_first_record(
        monkeypatch: pytest.MonkeyPatch, offsets: list[int], commits: list[int]) -> None:
    from types import SimpleNamespace

    tp = TopicPartition("clicks", 0)

    async def parent_getmany(self: Gaps, timeout: float) -> Any:
        for offset in offsets:
            yield tp, SimpleNamespace(topic="clicks", offset=offset)

    monkeypatch.setattr(driver.Consumer, "getmany", parent_getmany)

    async def drain() -> list[int | None]:
        consumer, done = Gaps(), []
        async for got, message in consumer.getmany(1.0):  # as Faust's fetch loop, then commit
            r_offset = consumer._read_offset[got]
            if r_offset and message.offset - r_offset > 1:  # the gap Faust records itself
                await consumer._add_gap(got, r_offset + 1, message.offset)
            consumer._acked[got].append(message.offset)
            consumer._acked_index[got].add(message.offset)
            consumer._read_offset[got] = message.offset
            if message.offset in (offsets[0], offsets[-1]):  # commit after the first and the last
                new = consumer._new_offset(got)
                if new is not None:
                    consumer._committed_offset[got] = new
                done.append(new)
        return done

    assert asyncio.run(drain()) == commits
