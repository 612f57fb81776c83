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

import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streamrec.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


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


COMPACTED = {"cleanup.policy": "compact"}


async def ensure_topics(settings: Settings, names: list[str] | None = None, *,
                        compacted: bool = False) -> None:
    """Create the clicks, dead-letter, model-update and items topics if missing (idempotent),
    or the ``names`` given (all compacted if ``compacted``).

    The items topic (the live catalogue, keyed by item id) is compacted too.

    The model-update topic has one partition and is **compacted** (announcements
    are keyed by version): the last announcement of every version stays, so a
    restarted worker finds the current model and ``rollback`` the earlier ones,
    however long ago they were published. An existing model-update topic that is
    not compacted is switched to compaction where the broker allows it
    (AlterConfigs); where it does not (Tansu 0.6), a warning says what to set.
    """
    names = names or [settings.clicks_topic, settings.dlq_topic, settings.model_updates_topic,
                      settings.items_topic, settings.impressions_topic]
    updates = settings.model_updates_topic
    # the latest record of each key is the state
    compact = set(names) if compacted else {updates, settings.items_topic}
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, num_partitions=1 if n == updates else settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor,
                        topic_configs=dict(COMPACTED) if n in compact else {})
               for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won
        if updates in names and updates in existing \
                and await topic_config(admin, updates, "cleanup.policy") != "compact":
            try:
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, updates,
                                                          dict(COMPACTED))])
            except KafkaError as e:
                log.warning("the model-update topic %s is not compacted and the broker refused "
                            "to change it (%s): set cleanup.policy=compact on it, or its "
                            "announcements expire with the retention time", updates, e)
    finally:
        await admin.close()


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """How many partitions each of ``names`` has (topics that do not exist are left out)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described
            if t.get("error_code", 0) == 0 and t["partitions"]}


async def topic_config(admin: AIOKafkaAdminClient, topic: str, key: str) -> str | None:
    """One configuration value of ``topic`` as the broker reports it."""
    for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]):
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == key:
                    return str(entry[1])
    return None


async def partition_reader(kafka: Kafka, topic: str, *, since_ms: int | None = None,
                           default_partitions: set[int] | None = None,
                           fetch_max_wait_ms: int = 500,
                           ) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer with no group, assigned every partition of ``topic``.

    Positioned at the beginning, or at the first record stamped at/after
    ``since_ms``. Every process reads every record (a group would split them).
    A missing topic raises :class:`DataError` unless ``default_partitions`` says
    what to assign (the model-update listener waits on a topic created later).
    ``fetch_max_wait_ms``: how long the broker may hold a fetch with no new data (the
    delay a follower adds to a record that arrives while a fetch is held). It reads with
    the settings' isolation level (its default for a bare address).
    The caller stops the consumer.
    """
    from streamrec.errors import DataError

    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=fetch_max_wait_ms,
                                isolation_level=(Settings.model_fields["isolation_level"].default
                                                 if isinstance(kafka, str) else kafka.isolation_level))
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
