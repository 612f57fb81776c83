"""The topics a worker consumes and produces, as Faust topic objects."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streamrec.settings import Settings


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A bytes-in, bytes-out topic: decoding is ours, so a bad record can't crash Faust."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=True)


@dataclass(frozen=True)
class Topics:
    clicks: faust.TopicT  # the events (key = user id); consumed by process_clicks
    dead_letters: faust.TopicT  # what could not be applied, with the reason (streams.batch)
    impressions: faust.TopicT  # the lists written, one record each (STREAMREC_IMPRESSIONS)


def worker_topics(app: faust.App, settings: Settings) -> Topics:
    """The click, dead-letter and impression topics. Model updates are read outside Faust
    (every worker reads all of them: :mod:`streams.hotswap`)."""
    return Topics(raw_topic(app, settings.clicks_topic, settings.topic_partitions),
                  raw_topic(app, settings.dlq_topic, settings.topic_partitions),
                  raw_topic(app, settings.impressions_topic, settings.topic_partitions))
