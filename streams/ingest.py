"""Click events over HTTP (``POST /events``, ``STREAMREC_WEB_EVENTS=true``).

For applications that cannot speak Kafka. The body is one event, validated as the
worker validates a record of the clicks topic (:func:`streamrec.events.decode_value`),
then produced unchanged to the clicks topic keyed by its ``user_id``: the worker that
owns the user's partition applies it like any other click.

The producer is the worker's own (not Faust's): its own connection, ``acks=all``, and
every produce bounded by :data:`PRODUCE_TIMEOUT_S`, so an accepted event is one the
broker acknowledged and an unreachable broker is a prompt
:class:`~streamrec.errors.BrokerUnavailable` (the HTTP 503), never a request left
hanging. It connects at the first event and, after a failed connection, again at the
next one. Requests that arrive while a connection is being made wait for that one
attempt, each for at most :data:`PRODUCE_TIMEOUT_S`: a broker that does not answer
gives every waiting request its 503 within the timeout, not one after another.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from streamrec.errors import BrokerUnavailable, EventError
from streamrec.events import ClickEvent, decode_value
from streamrec.kafka import Kafka, client_kwargs

log = logging.getLogger(__name__)

# The longest a produce (connection included) may take before the request gets its 503.
PRODUCE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Accepted:
    """Where an accepted event was written."""

    event_id: str
    partition: int
    offset: int


class EventIngest:
    """Validates events and produces them to ``topic`` keyed by user id."""

    def __init__(self, kafka: Kafka, topic: str, max_event_bytes: int,
                 timeout_s: float = PRODUCE_TIMEOUT_S, body_timeout_s: float = 10.0) -> None:
        self.kafka, self.topic, self.max_event_bytes = kafka, topic, max_event_bytes
        self.timeout_s = timeout_s
        self.body_timeout_s = body_timeout_s  # reading a POST body (streams.web)
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[AIOKafkaProducer] | None = None

    def validate(self, body: bytes) -> ClickEvent:
        """The event in ``body``; :class:`~streamrec.errors.EventError` (with the worker's
        reason and kind) when the worker would dead-letter it."""
        return decode_value(body, self.max_event_bytes)

    async def submit(self, body: bytes) -> Accepted:
        """Validate ``body`` and produce it; ``EventError`` for a bad event,
        ``BrokerUnavailable`` when the broker does not take it."""
        event = self.validate(body)
        producer = await self._started()
        try:
            meta = await asyncio.wait_for(
                producer.send_and_wait(self.topic, body, key=event.user_id.encode()), self.timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(f"the broker did not acknowledge the event within "
                                    f"{self.timeout_s:g} s") from None
        except MessageSizeTooLargeError:  # the record's overhead took it past the request size
            raise EventError(f"event is {len(body)} bytes, over the producer's request size with "
                             "its record overhead", "too_large") from None
        except KafkaError as e:
            raise BrokerUnavailable(f"the broker refused the event: {type(e).__name__}") from None
        return Accepted(event.event_id, meta.partition, meta.offset)

    async def _started(self) -> AIOKafkaProducer:
        """The connected producer: the one attempt in progress is shared, and each caller
        waits for it at most ``timeout_s``."""
        if self._producer is not None:
            return self._producer
        if self._starting is None or self._starting.done():
            self._starting = asyncio.get_running_loop().create_task(self._start())
            # its failure is each waiter's to raise; nobody waiting must not log it as lost
            self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(self._starting), self.timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(f"cannot connect to Kafka within {self.timeout_s:g} s") from None

    async def _start(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**client_kwargs(self.kafka), acks="all", linger_ms=0,
                                    request_timeout_ms=int(self.timeout_s * 1000))
        try:
            await asyncio.wait_for(producer.start(), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as e:
            await producer.stop()
            log.warning("POST /events: cannot connect to Kafka: %s", type(e).__name__)
            raise BrokerUnavailable(f"cannot connect to Kafka: {type(e).__name__}") from None
        except asyncio.CancelledError:
            await producer.stop()
            raise
        self._producer = producer
        return producer

    async def close(self) -> None:
        """Flush and close the producer (the web server's clean-up)."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
