"""A worker's start: what is checked before Faust runs, and how a failed start is reported.

A worker started right after another workload meets what that workload left:
its web port still held by a process that has not exited, topics another client
is creating at the same moment, a broker slow to answer. Each check here turns
one of those into a :class:`~streamrec.errors.StartupError` whose one-line
message names the cause, before Faust would fail on it with a traceback.

:class:`Worker` is Faust's worker, which logs a crash of any of its services as
one ``worker failed: …`` line before Faust's own
traceback ("We experienced a crash!"), so the cause is the first thing in the log.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time

from aiokafka.errors import KafkaError
from faust.worker import Worker as FaustWorker

from streamrec.errors import StartupError
from streamrec.kafka import ensure_topics, partition_counts
from streamrec.settings import Settings
from streams.tables import TABLE

log = logging.getLogger("streamrec.startup")


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE}-changelog"


def check_web_port(bind: str, port: int) -> None:
    """Refuse to start when ``bind:port`` cannot be bound (as aiohttp binds it: with
    SO_REUSEADDR, so a port in TIME_WAIT is free and one a process listens on is not)."""
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"the web port {bind}:{port} is in use: another worker, or one that has "
                    "not exited yet, listens on it; stop it or set STREAMREC_WEB_PORT") from None
            raise StartupError(f"cannot bind the web port {bind}:{port}: {e.strerror}; "
                               "check STREAMREC_WEB_BIND and STREAMREC_WEB_PORT") from None


def check_partitions(settings: Settings, counts: dict[str, int]) -> None:
    """The clicks topic and the session changelog must both have ``topic_partitions``
    partitions: a session is written to the changelog partition of its click's partition,
    so a changelog with fewer partitions loses sessions, and Faust does not refuse it."""
    for topic in (settings.clicks_topic, changelog_topic(settings)):
        have = counts.get(topic)
        if have is not None and have != settings.topic_partitions:
            raise StartupError(
                f"topic {topic} has {have} partitions but STREAMREC_TOPIC_PARTITIONS is "
                f"{settings.topic_partitions}: the clicks topic and the session changelog must "
                "both have that many (set the setting to the topic's count, or recreate the topic)")


async def prepare_topics(settings: Settings, timeout_s: float = 60.0) -> None:
    """Create the worker's topics and the session changelog (compacted) if missing, and
    check their partition counts. A broker that is slow or briefly refuses (another client
    creating the same topics, a broker still starting) is retried until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            await ensure_topics(settings)
            await ensure_topics(settings, [changelog_topic(settings)], compacted=True)
            counts = await partition_counts(
                settings, [settings.clicks_topic, changelog_topic(settings)])
            break
        except (TimeoutError, KafkaError, OSError) as e:
            if time.monotonic() >= deadline:
                raise StartupError(f"the broker at {settings.kafka_bootstrap} did not answer "
                                   f"topic requests within {timeout_s:.0f} s "
                                   f"({type(e).__name__}: {e})") from None
            log.warning("topics not ready (attempt %d: %s: %s); retrying", attempt,
                        type(e).__name__, e)
            await asyncio.sleep(min(2.0, 0.2 * attempt))
    check_partitions(settings, counts)


def check_codecs() -> None:
    """Refuse to start when aiokafka cannot decompress a codec another client may use:
    a batch it cannot read would stop the worker at that offset on every restart."""
    from aiokafka import codec

    missing = [name for name, has in (("snappy", codec.has_snappy), ("lz4", codec.has_lz4),
                                      ("zstd", codec.has_zstd)) if not has()]
    if missing:
        raise StartupError(f"aiokafka cannot decompress {', '.join(missing)} batches: install "
                           "cramjam (the worker extra pins it; install from requirements.lock)")


def preflight(settings: Settings) -> None:
    """Everything a worker checks before Faust starts; raises :class:`StartupError`."""
    check_codecs()
    check_web_port(settings.web_bind, settings.web_port)
    asyncio.run(prepare_topics(settings))


def cause(exc: BaseException) -> str:
    """One line for a failure: the exception's type and message, and its cause's."""
    line = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    inner = exc.__cause__ or exc.__context__
    if inner is not None and inner is not exc:
        line += f" (caused by {type(inner).__name__}: {inner})".replace("\n", " ")
    return line


class Worker(FaustWorker):
    """Faust's worker, which logs the cause of a failed start or a crash in one line first."""

    _cause_logged = False

    def _log_cause(self, exc: BaseException) -> None:
        if not self._cause_logged:
            self._cause_logged = True
            log.critical("worker failed: %s", cause(exc))

    async def start(self) -> None:
        try:
            await super().start()
        except Exception as e:
            self._log_cause(e)
            raise

    def _crash(self, reason: BaseException) -> None:
        self._log_cause(reason)
        super()._crash(reason)
