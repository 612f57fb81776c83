"""Unit tests of :mod:`streams.startup`: one line that names why a worker cannot start."""

from __future__ import annotations

import logging
import socket

import faust
import pytest

from streamrec.errors import StartupError
from streamrec.settings import Settings
from streams import startup


def test_a_held_web_port_is_refused_with_the_port_and_the_setting() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(StartupError, match=rf"127\.0\.0\.1:{port} is in use.*STREAMREC_WEB_PORT"):
            startup.check_web_port("127.0.0.1", port)


def test_a_port_whose_listener_closed_is_free_again() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    startup.check_web_port("127.0.0.1", port)  # raises nothing


def test_every_kafka_codec_is_readable_and_a_missing_one_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka import codec

    startup.check_codecs()  # the lock installs cramjam: snappy, lz4 and zstd all decompress
    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    monkeypatch.setattr(codec, "has_zstd", lambda: False)
    with pytest.raises(StartupError, match="cannot decompress lz4, zstd batches: install cramjam"):
        startup.check_codecs()


def test_a_changelog_with_other_partition_counts_is_refused() -> None:
    s = Settings(app_id="a", clicks_topic="c", topic_partitions=8)
    startup.check_partitions(s, {"c": 8, "a-sessions-changelog": 8})
    startup.check_partitions(s, {"c": 8})  # the changelog is created by the worker
    with pytest.raises(StartupError, match="a-sessions-changelog has 1 partitions but "
                                           "STREAMREC_TOPIC_PARTITIONS is 8"):
        startup.check_partitions(s, {"c": 8, "a-sessions-changelog": 1})
    with pytest.raises(StartupError, match="topic c has 4 partitions"):
        startup.check_partitions(s, {"c": 4, "a-sessions-changelog": 8})


def test_the_cause_is_one_line_with_the_underlying_error() -> None:
    try:
        try:
            raise OSError(98, "address already in use")
        except OSError as inner:
            raise RuntimeError("web server\nfailed") from inner
    except RuntimeError as e:
        line = startup.cause(e)
    assert "\n" not in line
    assert line == ("RuntimeError: web server failed "
                    "(caused by OSError: [Errno 98] address already in use)")


def test_a_crash_is_logged_in_one_line_once(caplog: pytest.LogCaptureFixture) -> None:
    app = faust.App("startup-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    worker = startup.Worker(app, loglevel="info")
    with caplog.at_level(logging.CRITICAL, logger="streamrec.startup"):
        worker._crash(RuntimeError("Controller node not found"))
        worker._crash(RuntimeError("a second crash"))
    lines = [r.getMessage() for r in caplog.records if r.name == "streamrec.startup"]
    assert lines == ["worker failed: RuntimeError: Controller node not found"]
