"""``kill -USR1 <worker pid>``: log the stack of every asyncio task (what a stuck worker waits on)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import logging
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def await_chain(coro: object, limit: int = 40) -> list[str]:
    """``file:line function`` of each coroutine or async generator ``coro`` is awaiting, outermost first."""
    lines: list[str] = []
    while coro is not None and len(lines) < limit:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        if nxt is None and frame is None:  # an async generator's asend/athrow: find its generator
            nxt = next((r for r in gc.get_referents(coro) if inspect.isasyncgen(r)), None)
        coro = nxt
    return lines


def dump_tasks() -> str:
    """Every task of the running loop, with the chain of awaits it is suspended in, as text."""
    out = io.StringIO()
    tasks = asyncio.all_tasks()
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"--- {task.get_name()}\n")
        for line in await_chain(task.get_coro()):
            out.write(f"    {line}\n")
    return out.getvalue()


def consumer_state(consumer: Any) -> dict[str, object]:
    """What a Faust consumer believes about its partitions (for the dump; best effort)."""
    def tps(items: Any) -> list[str]:
        return sorted(f"{tp.topic}[{tp.partition}]" for tp in (items or ()))

    def offsets(mapping: Any) -> dict[str, object]:
        return {f"{tp.topic}[{tp.partition}]": v for tp, v in sorted(dict(mapping or {}).items())}

    state: dict[str, object] = {}
    for name, read in [
        ("assignment", lambda: tps(consumer.assignment())),
        ("active", lambda: tps(consumer._active_partitions)),
        ("paused", lambda: tps(consumer._paused_partitions)),
        ("buffered", lambda: tps(consumer._buffered_partitions)),
        ("flow_active", lambda: consumer.flow_active),
        ("app_flow_active", lambda: consumer.app.flow_control.is_active()),
        ("read_offset", lambda: offsets(consumer._read_offset)),
        ("committed_offset", lambda: offsets(consumer._committed_offset)),
        ("unacked_messages", lambda: len(consumer._unacked_messages)),
        ("kafka_positions", lambda: _kafka_positions(consumer)),
    ]:
        try:
            state[name] = read()  # type: ignore[no-untyped-call]
        except Exception as e:  # noqa: BLE001 - a diagnostic must not fail
            state[name] = f"unavailable ({type(e).__name__})"
    return state


def _aiokafka_assignment(consumer: Any) -> tuple[Any, Any]:
    """The aiokafka consumer under a Faust consumer, and its current assignment."""
    aiokafka_consumer = consumer._thread._ensure_consumer()
    return aiokafka_consumer, aiokafka_consumer._subscription.subscription.assignment


def _kafka_positions(consumer: Any) -> dict[str, object]:
    """aiokafka's own view: fetch position, paused, awaiting an offset reset, per partition."""
    _, assignment = _aiokafka_assignment(consumer)
    out: dict[str, object] = {}
    for tp in sorted(assignment.tps):
        st = assignment.state_value(tp)
        where = st.position if st.has_valid_position else "no position"
        flags = [f for f, on in (("paused", st.paused), ("awaiting reset", st.awaiting_reset)) if on]
        out[f"{tp.topic}[{tp.partition}]"] = f"{where}{' ' + ','.join(flags) if flags else ''}"
    return out


def consumer_lag(consumer: Any) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (high watermark, fetch position), for every assigned partition
    whose both are known (the last fetch response tells the high watermark)."""
    aiokafka_consumer, assignment = _aiokafka_assignment(consumer)
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for tp in assignment.tps:
        st = assignment.state_value(tp)
        high = aiokafka_consumer.highwater(tp)
        if st.has_valid_position and high is not None:
            out[(tp.topic, tp.partition)] = (int(high), int(st.position))
    return out


def install_task_dump(loop: asyncio.AbstractEventLoop,
                      extra: Callable[[], dict[str, object]] | None = None) -> None:
    """Log ``dump_tasks()`` (and ``extra()``) at WARNING whenever the process gets SIGUSR1."""
    def dump() -> None:
        more = ""
        if extra is not None:
            try:
                more = "\n" + "\n".join(f"{k}: {v}" for k, v in extra().items())
            except Exception as e:  # noqa: BLE001
                more = f"\n(extra state unavailable: {e!r})"
        log.warning("%s%s", dump_tasks(), more)

    try:
        loop.add_signal_handler(signal.SIGUSR1, dump)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, threads)
        log.info("SIGUSR1 task dump not available on this platform")
