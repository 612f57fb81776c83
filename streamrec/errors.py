"""Every error streamrec raises on purpose derives from :class:`StreamrecError`.

::

    StreamrecError
    ├── ConfigError            bad settings or CLI arguments
    ├── BundleError            a model bundle cannot be used
    │   └── BundleRejected     a bundle failed validation (names file and check)
    ├── EventError             a click event failed to decode or validate
    ├── BrokerUnavailable      POST /events: the broker did not take the event
    ├── DataError              a dataset file is malformed or empty
    ├── ExportError            an exported ONNX graph does not reproduce the torch model
    ├── StartupError           a worker cannot start (port taken, topics unusable, …)
    └── WaitError              a process being waited on did not get there
        ├── ProcessExited      it exited first (also a RuntimeError)
        └── WaitTimedOut       the timeout passed first (also a TimeoutError)
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Base of all streamrec errors."""


class ConfigError(StreamrecError):
    """Settings or command-line arguments are invalid."""


class BundleError(StreamrecError):
    """A model bundle cannot be loaded."""


class BundleRejected(BundleError):
    """A bundle failed one validation check.

    ``check`` is a short machine-readable name (``sha256``, ``signature``…),
    ``path`` the bundle file involved, if any.
    """

    def __init__(self, bundle: str, check: str, detail: str, path: str | None = None) -> None:
        self.bundle, self.check, self.detail, self.path = bundle, check, detail, path
        where = f" {path}" if path else ""
        super().__init__(f"bundle {bundle} rejected:{where} {check}: {detail}")


class EventError(StreamrecError):
    """A click event is malformed. ``reason`` goes to the dead-letter record; ``kind`` is a
    short fixed name for the class of failure (a metric label: ``too_large``,
    ``malformed_json``, ``invalid_event``, …)."""

    def __init__(self, reason: str, kind: str = "invalid_event") -> None:
        self.reason, self.kind = reason, kind
        super().__init__(reason)


class BrokerUnavailable(StreamrecError):
    """An event posted over HTTP could not be written to the clicks topic (the broker is
    unreachable or did not acknowledge it in time); the message says why."""


class DataError(StreamrecError):
    """A dataset file is malformed or empty."""


class StartupError(StreamrecError):
    """A worker cannot start; the message names the cause and what to do about it."""


class ExportError(StreamrecError):
    """An exported ONNX graph does not reproduce the torch model (or cannot be exported)."""


class WaitError(StreamrecError):
    """A process being waited on (a worker, in the demo, benchmarks and tests) did not
    reach the awaited state."""


class ProcessExited(WaitError, RuntimeError):
    """A process being waited on exited before the condition held."""


class WaitTimedOut(WaitError, TimeoutError):
    """The condition did not hold within the timeout."""
