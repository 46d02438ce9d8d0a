"""Where replay and rebuild read records from: the S3 archive, or Kafka from a point in time.

Both yield :class:`Chunk` s of :class:`ArchivedRecord` s in per-partition offset order (so records of one
payment stay in order) and say how much work there is up front, for the progress line: objects for
S3, offsets for Kafka. The time range is on the Kafka record timestamp — the same clock the archive's
``dt=``/``hour=`` folders use — half-open ``[since, until)``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aiokafka import TopicPartition

from paystream.config import Settings
from paystream.errors import ConfigurationError
from paystream.kafka import make_consumer
from processors.recovery.archive_format import (
    ArchivedRecord,
    day_prefixes,
    decode_object,
    hour_of,
    parse_object_key,
)
from processors.recovery.archive_store import ArchiveStore

_READ_AHEAD = 4  # S3 objects downloaded concurrently ahead of the one being replayed


@dataclass(frozen=True, slots=True)
class Chunk:
    records: list[tuple[ArchivedRecord, str]]  # (record, origin) — origin goes into the ReplayMark
    units: int  # progress units this chunk completes


class RecordSource(Protocol):
    unit: str
    description: str

    async def plan(self) -> int | None:
        """Find the work; return its size in ``unit`` s (None when unknown)."""

    def chunks(self) -> AsyncIterator[Chunk]: ...

    async def close(self) -> None: ...


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


class ArchiveSource:
    """The objects of one archived topic whose hour overlaps ``[since, until)``."""

    unit = "objects"

    def __init__(
        self, store: ArchiveStore, topic: str, since: datetime | None, until: datetime | None
    ) -> None:
        self.store = store
        self.topic = topic
        self.since = since
        self.until = until
        self.keys: list[str] = []
        self.description = f"s3://{store.bucket}/{store.prefix}/{topic}"

    async def plan(self) -> int:
        await asyncio.to_thread(self.store.check_bucket)
        self.keys = await asyncio.to_thread(self._list)
        return len(self.keys)

    def _list(self) -> list[str]:
        first_hour = hour_of(_ms(self.since) or 0) if self.since else None
        found = []
        for prefix in day_prefixes(self.store.prefix, self.topic, self.since, self.until):
            for stored in self.store.list(prefix):
                parts = parse_object_key(stored.key)
                if parts is None or parts.topic != self.topic:
                    continue
                if first_hour is not None and parts.hour < first_hour:
                    continue
                if self.until is not None and parts.hour >= self.until:
                    continue
                found.append((parts, stored.key))
        return [key for _, key in sorted(found)]

    async def chunks(self) -> AsyncIterator[Chunk]:
        window: deque[tuple[str, asyncio.Future[bytes]]] = deque()
        keys = iter(self.keys)

        def fill() -> None:
            while len(window) < _READ_AHEAD and (key := next(keys, None)) is not None:
                window.append((key, asyncio.ensure_future(asyncio.to_thread(self.store.get, key))))

        try:
            fill()
            while window:
                key, download = window.popleft()
                data = await download
                fill()
                yield self._decode(key, data)
        finally:
            for _, download in window:
                download.cancel()

    def _decode(self, key: str, data: bytes) -> Chunk:
        origin = f"s3://{self.store.bucket}/{key}"
        return Chunk([(record, f"{origin}#{line}") for line, record in enumerate(decode_object(data), 1)], 1)

    async def close(self) -> None:
        return None


class KafkaSource:
    """One topic read from the first offset at/after ``since`` up to the end offsets seen at start."""

    unit = "offsets"

    def __init__(
        self, settings: Settings, topic: str, since: datetime | None, until: datetime | None
    ) -> None:
        self.topic = topic
        self.since = since
        self.until = until
        self.consumer = make_consumer(settings, group_id=None, client_suffix="replay")
        self.stops: dict[TopicPartition, int] = {}  # partitions still being read → their end offset
        self.positions: dict[TopicPartition, int] = {}
        self.description = f"kafka://{topic}"

    async def plan(self) -> int:
        await self.consumer.start()
        # consumer.topics() fetches metadata without keeping it, and partitions_for_topic() only knows
        # topics already in the client's cache: read the fetched cluster metadata directly.
        cluster = await self.consumer._client.fetch_all_metadata()
        numbers = sorted(cluster.partitions_for_topic(self.topic) or ())
        if not numbers:
            raise ConfigurationError(f"topic {self.topic!r} does not exist on the broker")
        partitions = [TopicPartition(self.topic, number) for number in numbers]
        self.consumer.assign(partitions)
        starts = await self.consumer.beginning_offsets(partitions)
        # The end is fixed now: replaying into the topic we read must not chase its own output.
        stops = await self.consumer.end_offsets(partitions)
        if self.since is not None:
            found = await self.consumer.offsets_for_times({tp: _ms(self.since) for tp in partitions})
            starts = {tp: (found[tp].offset if found[tp] is not None else stops[tp]) for tp in partitions}
        if self.until is not None:
            found = await self.consumer.offsets_for_times({tp: _ms(self.until) for tp in partitions})
            stops = {tp: min(stops[tp], found[tp].offset if found[tp] else stops[tp]) for tp in partitions}
        for tp in partitions:
            self.consumer.seek(tp, starts[tp])
            self.positions[tp] = starts[tp]
            if stops[tp] > starts[tp]:
                self.stops[tp] = stops[tp]
            else:
                self.consumer.pause(tp)
        return sum(max(stops[tp] - starts[tp], 0) for tp in partitions)

    async def chunks(self) -> AsyncIterator[Chunk]:
        while self.stops:
            fetched = await self.consumer.getmany(timeout_ms=1000, max_records=2000)
            kept = [
                (ArchivedRecord.from_consumer_record(r), f"kafka://{tp.topic}/{tp.partition}/{r.offset}")
                for tp, records in fetched.items()
                for r in records
                if r.offset < self.stops.get(tp, -1)
            ]
            units = 0
            # Every open partition is checked, not only those that returned records: a partition whose
            # tail is transaction markers reaches its end without yielding anything.
            for tp, stop in list(self.stops.items()):
                position = min(await self.consumer.position(tp), stop)
                units += position - self.positions[tp]
                self.positions[tp] = position
                if position >= stop:
                    self.consumer.pause(tp)
                    del self.stops[tp]
            yield Chunk(kept, units)

    async def close(self) -> None:
        await self.consumer.stop()
