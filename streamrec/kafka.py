"""Kafka for every client the project makes, in one place: connection, topics, reading.

``client_kwargs`` feeds aiokafka's producers, consumers and admin client
(replay, publish, topic admin, model-update listener, training from the topic);
``faust_credentials`` feeds the Faust app. Both come from the same settings, so
a cluster that needs SASL (PLAIN, SCRAM-SHA-256/512) and/or TLS (CA, client
certificate) is configured once. Passwords stay ``SecretStr`` until this
boundary and are never logged.

``ensure_topics`` creates what a run needs; ``partition_reader`` and ``drain``
are the one way to read a whole topic without a consumer group (the model-update
broadcast, training from the clicks topic).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.settings import Settings

if TYPE_CHECKING:
    import faust


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context for SSL / SASL_SSL (server verified against the CA), else None."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_ssl_certfile is not None:
        key_password = settings.kafka_ssl_key_password
        ctx.load_cert_chain(str(settings.kafka_ssl_certfile),
                            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                            key_password.get_secret_value() if key_password else None)
    return ctx


Kafka = str | Settings  # a plain bootstrap list (no security) or the full settings


def client_kwargs(settings: Kafka) -> dict[str, Any]:
    """``bootstrap_servers`` and security arguments for an aiokafka client."""
    if isinstance(settings, str):
        return {"bootstrap_servers": settings}
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                              "security_protocol": settings.kafka_security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        kwargs.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                      sasl_plain_username=settings.kafka_sasl_username,
                      sasl_plain_password=password.get_secret_value() if password else None)
    return kwargs


def faust_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The Faust app's ``broker_credentials`` (None for PLAINTEXT)."""
    import faust

    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=password.get_secret_value() if password else None,
                                     ssl_context=ctx, mechanism=settings.kafka_sasl_mechanism)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> None:
    """Create the clicks, dead-letter and model-update topics if missing (idempotent)."""
    names = names or [settings.clicks_topic, settings.dlq_topic, settings.model_updates_topic]
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, num_partitions=settings.topic_partitions if n != settings.model_updates_topic
                        else 1, replication_factor=settings.topic_replication_factor)
               for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won
    finally:
        await admin.close()


async def partition_reader(kafka: Kafka, topic: str, *, since_ms: int | None = None,
                           default_partitions: set[int] | None = None,
                           ) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer with no group, assigned every partition of ``topic``.

    Positioned at the beginning, or at the first record stamped at/after
    ``since_ms``. Every process reads every record (a group would split them).
    A missing topic raises :class:`DataError` unless ``default_partitions`` says
    what to assign (the model-update listener waits on a topic created later).
    The caller stops the consumer.
    """
    from streamrec.errors import DataError

    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata
        parts = consumer.partitions_for_topic(topic) or default_partitions
        if not parts:
            where = client_kwargs(kafka)["bootstrap_servers"]
            raise DataError(f"topic {topic!r} does not exist on {where}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if since_ms is None:
            await consumer.seek_to_beginning(*tps)
        else:
            starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            await consumer.seek_to_end(*tps)
            for tp in tps:
                if (found := starts.get(tp)) is not None:
                    consumer.seek(tp, found.offset)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps


async def drain(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                until_ms: int | None = None, idle_ms: int = 300) -> AsyncIterator[ConsumerRecord]:
    """Yield every record of ``tps`` from the current positions up to ``until_ms`` (default: now).

    Robust to brokers whose end offsets are approximate: some Kafka-protocol
    brokers (Tansu, seen here) report end offsets that undercount batched
    records, so "read until the end offsets" stops early. A partition is done
    when either a record stamped after ``until_ms`` arrives (it is not yielded),
    or a poll returns nothing once the reported end offset is reached. That
    terminates on a live topic and loses nothing on an idle one.
    """
    until = until_ms if until_ms is not None else int(time.time() * 1000)
    end = await consumer.end_offsets(tps)
    active = set(tps)
    while active:
        batch = await consumer.getmany(*active, timeout_ms=idle_ms)
        for tp, msgs in batch.items():
            for m in msgs:
                if m.timestamp > until:
                    active.discard(tp)
                    break
                yield m
        for tp in list(active):
            if not batch.get(tp) and await consumer.position(tp) >= end[tp]:
                active.discard(tp)
