"""Structured logs: one JSON object per line (``STREAMREC_LOG_FORMAT=json``), standard library only.

Each line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``msg`` and ``worker_id``, plus whatever context the call site passes with
``extra=`` (``topic``, ``partition``, ``offset``, ``model_version``, ``reason``…)
and ``exc`` with the traceback of a logged exception.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import orjson

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str | None = None) -> None:
        super().__init__()
        self.worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "worker_id": self.worker_id,
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def logging_config(level: str, fmt: str, worker_id: str | None) -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for ``fmt`` ``json`` (None: the default text logs)."""
    if fmt != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "worker_id": worker_id}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stdout"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }


class RateLimitedLog:
    """Logs at most one line per ``interval_s`` for a stream of similar events, with a count:
    ``"{what} {message}"``, e.g. one dead letter a second, however many arrive."""

    def __init__(self, interval_s: float, what: str, logger: logging.Logger | None = None) -> None:
        self.interval_s, self.what = interval_s, what
        self.log = logger or logging.getLogger("streamrec")
        self._last = 0.0
        self._suppressed = 0

    def add(self, message: str, **context: object) -> None:
        """Log ``message`` unless one was logged within the interval; ``context`` goes to
        the record (fields of a JSON log line)."""
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more since the last line)" if self._suppressed else ""
        self.log.warning("%s %s%s", self.what, message, more,
                         extra={**context, "suppressed": self._suppressed})
        self._last, self._suppressed = now, 0
