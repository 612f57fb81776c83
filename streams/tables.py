"""The session table: co-partitioned with the partition each event came from.

Two rules that Faust's plain ``Table`` does not give us:

* **The changelog partition is the source partition.** Kafka guarantees only
  that a key stays on the partition its producer chose; producers do not all
  hash alike (Java and aiokafka use murmur2, librdkafka's default is CRC32,
  some pick partitions explicitly). A worker recovers changelog partition
  ``p`` when it is assigned clicks partition ``p``, so a session must be
  written to the changelog partition of the record it was built from, not to
  one its key hashes to. ``put`` takes that partition; plain assignment is
  refused.
* **A changelog record never rolls a session back.** Recovery (and standby
  replicas) apply changelog records in log order, but a fenced-out worker
  (paused, partitioned away) can append its stale state *after* the new
  owner's. Sessions carry ``seq``, the count of applied events, and a record
  whose ``seq`` is below the stored one is skipped.

The table lives in memory or in RocksDB (:mod:`streams.table_stores`), by the app's
``store`` URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import faust
from faust.types import EventT

from streamrec.session import Session
from streams.table_stores import SessionStore

log = logging.getLogger(__name__)
# The session table's name: its changelog topic is "{app_id}-sessions-changelog".
TABLE = "sessions"


class SessionTable(faust.Table[bytes, Session]):
    """``faust.Table`` of ``user key -> Session`` written with ``put(key, value, partition)``."""

    _partition: int | None = None
    stale_skipped: int = 0
    changelog_applied: int = 0  # changelog records read into the store (recovery, standbys)

    def put(self, key: bytes, value: Session, partition: int) -> None:
        """Set ``key`` and send it to changelog ``partition`` (the record's source partition)."""
        self._partition = partition
        try:
            self[key] = value
        finally:
            self._partition = None
        # Faust's memory store forgets keys of partitions it no longer owns after a
        # recovery, but knows the partition only of keys it read from the changelog.
        known = getattr(self.data, "_key_partition", None)
        if known is not None:
            known[key] = partition

    @property
    def persistent(self) -> bool:
        """Whether sessions outlive the process (the rocksdb store)."""
        return isinstance(self.data, SessionStore)

    def _new_store_by_url(self, url: Any) -> Any:
        if str(url).startswith("rocksdb:"):  # Faust's store, with our partition rule
            return SessionStore(url, self.app, self, table_name=self.name, key_type=self.key_type,
                                key_serializer=self.key_serializer,
                                value_serializer=self.value_serializer,
                                value_type=self.value_type, loop=self.loop, options=self.options)
        return super()._new_store_by_url(url)

    def partition_for_key(self, key: Any) -> int | None:
        if self._partition is None:
            raise TypeError("SessionTable is written with put(key, value, partition) only")
        return self._partition

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        before = self.stale_skipped
        accepted = list(self._not_older(batch))
        super().apply_changelog_batch(accepted)
        self.changelog_applied += len(accepted)
        if self.stale_skipped > before:
            # normal for a standby that owned the partition before (its state is ahead of
            # the records it re-reads); a fenced-out writer's records land here too
            log.info("changelog: kept %d newer sessions over older records (%d so far)",
                     self.stale_skipped - before, self.stale_skipped)

    def _not_older(self, batch: Iterable[EventT[Any]]) -> Iterator[EventT[Any]]:
        accepted: dict[Any, int] = {}
        for event in batch:
            value = event.value
            if not isinstance(value, dict):  # tombstone or foreign record: Faust's rules
                yield event
                continue
            key = self._to_key(event.key)
            seq = value.get("seq", 0)
            if key in accepted:
                current = accepted[key]
            else:
                stored = self.data.get(key)
                current = stored.get("seq", -1) if isinstance(stored, dict) else -1
            if seq < current:
                self.stale_skipped += 1
                log.debug("skipped a stale changelog record for %r: seq %s < %s (partition %s, "
                          "offset %s)", key, seq, current, event.message.partition,
                          event.message.offset)
                continue
            accepted[key] = seq
            yield event


def session_table(app: faust.App, partitions: int) -> SessionTable:
    """The session table, registered with ``app``: raw ``bytes`` keys (the record key,
    the user id), plain-dict values through the json codec, one changelog partition
    per clicks partition."""
    table = SessionTable(app=app, name=TABLE, partitions=partitions, key_type=bytes)
    app.tables.add(table)
    return table
