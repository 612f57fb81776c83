"""``streamrec.kafka`` against the real broker: the topics a run creates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.kafka import ensure_topics, topic_config
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


async def _policies(s: Settings) -> dict[str, str | None]:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        return {t: await topic_config(admin, t, "cleanup.policy")
                for t in (s.clicks_topic, s.model_updates_topic)}
    finally:
        await admin.close()


def test_the_model_update_topic_is_compacted(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()  # make_settings runs ensure_topics
    policies = asyncio.run(_policies(s))
    assert policies[s.model_updates_topic] == "compact"
    assert policies[s.clicks_topic] != "compact"


def test_an_existing_delete_policy_model_topic_is_switched_or_reported(
        make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    """Switched where the broker takes AlterConfigs (Kafka); a warning that says what to set
    where it does not (Tansu 0.6 answers AlterConfigs with an unknown API version)."""
    s = make_settings()
    old = s.model_copy(update={"model_updates_topic": s.model_updates_topic + "-old"})

    async def create_plain() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(old.model_updates_topic, 1, 1)])
        finally:
            await admin.close()

    asyncio.run(create_plain())
    with caplog.at_level("WARNING", logger="streamrec.kafka"):
        asyncio.run(ensure_topics(old, [old.model_updates_topic]))
    if asyncio.run(_policies(old))[old.model_updates_topic] != "compact":
        assert f"the model-update topic {old.model_updates_topic} is not compacted" in caplog.text
        assert "set cleanup.policy=compact" in caplog.text


@pytest.mark.parametrize("level", ["read_committed", "read_uncommitted"])
def test_a_topic_reader_reads_at_the_settings_isolation_level(make_settings: Callable[..., Settings],
                                                             level: str) -> None:
    """Records of a producer without transactions read the same at either level; the local
    broker refuses transactional producers, so aborted records are not exercised here."""
    from aiokafka import AIOKafkaProducer

    from streamrec.kafka import drain, partition_reader

    s = make_settings().model_copy(update={"isolation_level": level})

    async def run() -> tuple[str, list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(s.clicks_topic, f"r{i}".encode(), key=b"u1")
        finally:
            await producer.stop()
        consumer, tps = await partition_reader(s, s.clicks_topic)
        try:
            return consumer._isolation_level, [m.value async for m in drain(consumer, tps)]
        finally:
            await consumer.stop()

    used, values = asyncio.run(run())
    assert used == level and values == [b"r0", b"r1", b"r2"]
