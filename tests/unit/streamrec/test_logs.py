"""Unit tests of :mod:`streamrec.logs`."""

from __future__ import annotations

import logging

import orjson

from streamrec.logs import JsonFormatter, logging_config


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("streams.worker", logging.WARNING, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_one_json_object_per_line_with_the_context() -> None:
    line = JsonFormatter("w-1").format(_record("dead-lettered %s\nsecond line", "clicks[3]@17",
                                               partition=3, offset=17, reason="malformed_json"))
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["msg"] == "dead-lettered clicks[3]@17\nsecond line"
    assert (out["level"], out["logger"], out["worker_id"]) == ("warning", "streams.worker", "w-1")
    assert (out["partition"], out["offset"], out["reason"]) == (3, 17, "malformed_json")
    assert out["ts"].endswith("+00:00")


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    out = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in out["exc"]


def test_text_format_keeps_the_default_configuration() -> None:
    assert logging_config("info", "text", "w") is None
    config = logging_config("debug", "json", "w")
    assert config is not None and config["root"]["level"] == "DEBUG"
