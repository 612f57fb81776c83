"""Topic administration: create the topics a run needs (idempotent)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.kafka import client_kwargs
from streamrec.settings import Settings


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> None:
    """Create the clicks, dead-letter and model-update topics if missing."""
    names = names or [settings.clicks_topic, settings.dlq_topic, settings.model_updates_topic]
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, num_partitions=settings.topic_partitions if n != settings.model_updates_topic
                        else 1, replication_factor=settings.topic_replication_factor) for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won
    finally:
        await admin.close()
