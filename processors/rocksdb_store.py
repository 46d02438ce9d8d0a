"""A RocksDB table store that keeps every key in the database of its changelog partition.

faust-streaming 0.15.3's RocksDB store (``faust.stores.rocksdb.Store``) keeps one database per partition and
puts a written key into the database of the *current event's* partition. Our agents write their tables
after a batch (the current event is then the batch's last, of any partition), timers write with no current
event, and a table's changelog partition is chosen by the producer from the key (``use_partitioner=True``).
So one key collects copies in several databases, and a read that misses faust's small key→partition cache
(1,000 keys by default; empty after every restart) returns whichever copy it finds first: a stale payment
state, hence repeated or missing status events.

:class:`KeyPartitionedStore` places each key by the key alone: the partition its changelog record goes to,
which is Kafka's default partitioner over the serialized key (faust sends table changelogs with
``partition=None`` and ``eager_partitioning=True``; aiokafka's ``DefaultPartitioner`` then takes
``(murmur2(key) & 0x7fffffff) % partitions``). Recovery already writes each changelog record into the
database of the record's partition, which is the same number, so live writes and recovered state meet in
one database per key. Everything else (recovery, persisted offsets, iteration over the active partitions,
rebalancing) is faust's.

Select it with ``store="paystream-rocksdb://"`` after :func:`register`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2
from faust import stores
from faust.exceptions import ImproperlyConfigured
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

SCHEME = "paystream-rocksdb"
STORE_URL = f"{SCHEME}://"
# The database files get their own suffix, so a directory written by faust's stock store (keys in the wrong
# partitions, persisted offsets that claim they are complete) is never read: switching to this store starts
# from empty databases and recovers every table from its changelog.
DB_SUFFIX = ".by-key.db"


@functools.lru_cache(maxsize=65_536)
def changelog_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (aiokafka's ``DefaultPartitioner``) gives ``key``.

    Cached: aiokafka's murmur2 is pure Python (~15 µs) and the agents look a key up and write it back in
    the same batch."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class KeyPartitionedStore(RocksDBStore):
    """faust's RocksDB store with each key in the database of the partition its changelog record goes to."""

    def __init__(self, url: Any, app: Any, table: Any, **kwargs: Any) -> None:
        if not table.use_partitioner:
            # Without the partitioner faust sends the changelog to the current event's partition, so the
            # key alone does not say where recovery will put it.
            raise ImproperlyConfigured(f"table {table.name!r}: {STORE_URL} needs use_partitioner=True")
        if app.conf.producer_partitioner is not None:
            raise ImproperlyConfigured(f"{STORE_URL} assumes Kafka's default partitioner; "
                                       f"producer_partitioner is {app.conf.producer_partitioner!r}")
        super().__init__(url, app, table, **kwargs)
        # The changelog topic is created with the table's partition count (faust: the app default if None).
        self.partitions: int = table.partitions or app.conf.topic_partitions

    def partition_of(self, key: bytes) -> int:
        """The partition of a serialized key (the bytes faust also sends as the changelog record's key)."""
        return changelog_partition(key, self.partitions)

    def _open_db_of(self, key: bytes) -> Any:  # rocksdict.Rdict
        return self._db_for_partition(self.partition_of(key))

    def _open_db_or_none(self, key: bytes) -> Any:  # rocksdict.Rdict | None
        # Reads never open a database: an unopened partition is not assigned here (faust opens the active
        # ones on assignment and recovery), and opening one would leave an empty, locked database behind.
        return self._dbs.get(self.partition_of(key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._open_db_of(key).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        db = self._open_db_or_none(key)
        if db is None:
            return None
        value: bytes | None = db.get(key)
        return value

    def _del(self, key: bytes) -> None:
        self._open_db_of(key).delete(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def partition_path(self, partition: int) -> Path:
        return self.path / f"{self.basename}-{partition}{DB_SUFFIX}"

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        self.check_partition_count(self.app.consumer.topic_partitions(self.table.changelog_topic.get_topic_name()))
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    def check_partition_count(self, actual: int | None) -> None:
        """The producer hashes over the changelog topic's real partition count: a topic created earlier with
        another count would send keys where reads never look. ``None``: not known yet (nothing to check)."""
        if actual is not None and actual != self.partitions:
            raise ImproperlyConfigured(
                f"table {self.table_name!r}: changelog topic has {actual} partitions, the table {self.partitions}")


def register() -> None:
    """Make ``store="paystream-rocksdb://"`` resolve to :class:`KeyPartitionedStore`. Idempotent; call it
    before the faust app creates its tables' stores (they are created lazily, on first use)."""
    stores.STORES[SCHEME] = f"{__name__}:{KeyPartitionedStore.__name__}"
