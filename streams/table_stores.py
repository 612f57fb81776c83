"""Where the session table keeps its state: in memory, or in RocksDB on local disk.

``STREAMREC_TABLE_STORE=memory`` (the default) holds every owned session in the
worker's heap and rebuilds it from the changelog at each start.
``STREAMREC_TABLE_STORE=rocksdb`` keeps one RocksDB database per owned
partition under ``STREAMREC_DATA_DIR`` (Faust's RocksDB store, through the
``rocksdict`` binding): state is bounded by disk, not RAM, and a worker that
restarts on the same data directory reads only the changelog written since its
last write (the offset each database keeps), not the whole changelog.

Faust's RocksDB store picks the partition database of a read or a write from
the *current stream event*. That does not hold here: the session table is
written after a batch, with the partition each user's record came from
(:meth:`streams.tables.SessionTable.put`), and a batch spans partitions. So
:class:`SessionStore` writes to the partition ``put`` names and reads through
the key → partition index (falling back to every owned database), never from
the current event.

A changelog can begin again below the offset a database kept (a broker on
memory storage restarted, the topic recreated): Faust then refuses to start
("The persisted offset ... is higher than the last offset in that topic").
:class:`ChangelogRecovery` reads such a changelog from its start instead, over
the sessions on disk, and says so.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.stores import rocksdb
from faust.tables.recovery import Recovery

log = logging.getLogger(__name__)

MEMORY, ROCKSDB = "memory", "rocksdb"
STORES = (MEMORY, ROCKSDB)


class SessionStore(rocksdb.Store):
    """Faust's RocksDB store, with the partition chosen by the writer, not by the current event."""

    def __init__(self, url: Any, app: Any, table: Any, **kwargs: Any) -> None:
        if not rocksdb.USE_ROCKSDICT:
            raise RuntimeError("STREAMREC_TABLE_STORE=rocksdb needs the rocksdict package "
                               "(pip install 'streamrec[worker]')")
        super().__init__(url, app, table, driver="rocksdict", **kwargs)

    _reading = False  # inside apply_changelog_batch: offsets come from the log itself

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        self._reading = True
        try:
            super().apply_changelog_batch(batch, to_key, to_value)
        finally:
            self._reading = False

    def forget_persisted_offset(self, tp: Any) -> None:
        """The changelog began again: what it holds from now on is read from its start."""
        super().set_persisted_offset(tp, -1)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        """Faust records the offset of each changelog record this worker *sends* as read.
        That is only true when no other writer appended in between: a paused worker that
        wakes up still owning its partitions sends its late records after the new
        owner's, and the jump would skip the new owner's records at the next recovery
        (seen in the paused-worker fault scenario: sessions lost). So an own write moves
        the offset only from the one just before it."""
        if not self._reading:
            last = self.persisted_offset(tp)
            if last is not None and offset != last + 1:
                return  # a gap: someone else wrote; recovery reads on from ``last``
        super().set_persisted_offset(tp, offset)

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = getattr(self.table, "_partition", None)
        if partition is None:
            raise TypeError("SessionStore is written through SessionTable.put(key, value, partition)")
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        found = self._get_bucket_for_key(key)
        return None if found is None else found.value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


class ChangelogRecovery(Recovery):
    """Faust's recovery, reading a changelog that ends below a database's offset from its
    start: the changelog began again, and the offset kept on disk points past its end."""

    async def _build_highwaters(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        offsets = self.active_offsets if destination is self.active_highwaters else self.standby_offsets
        for tp in tps:
            kept, last = offsets.get(tp), destination.get(tp)  # last: the last offset, -1 empty
            if kept is None or last is None or kept <= last or kept < 0:
                continue
            log.warning("changelog %s[%d] ends at offset %d, below the offset %d the sessions on "
                        "disk were read up to: the changelog began again (a broker that lost its "
                        "logs, a recreated topic); reading it from its start over the sessions "
                        "on disk", tp.topic, tp.partition, last + 1, kept)
            offsets[tp] = -1
            store = getattr(self.tp_to_table.get(tp), "data", None)
            if isinstance(store, SessionStore):
                store.forget_persisted_offset(tp)
