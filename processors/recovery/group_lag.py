"""How far a consumer group is behind on some topics, counted the way a ``read_committed`` consumer sees them.

Why not ``end offset - committed offset``: under exactly-once a stage commits its input offsets inside the
transaction that writes its outputs, and its committed offset stops right after the last *record* it
processed. A topic written by a transactional producer (the processor's internal ``{app_id}-payment-inputs``)
also holds the commit marker after that record, and after a killed worker possibly an aborted batch and its
abort marker: its end offset stays one or more past the committed offset although nothing is left to
process. So a partition that looks behind is *probed*: a ``read_committed`` consumer reads it from the
group's committed offset; if it reaches the end without receiving a record, only markers or aborted records
were left, and the partition is drained.

Probing only starts once a partition's committed offset has stopped moving (a group still committing is
behind by definition), so a long rebuild does not re-read its topics twice a second. Topics that do not
exist yet (the processor creates its internal topic when it starts) are reported as missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer

_PROBE_TIMEOUT_S = 5.0  # a partition the probe could not read to its end in this time counts as behind


@dataclass(slots=True)
class Lag:
    """One measurement: partitions with records left (``end - committed``: an upper bound), committed
    offsets per topic, and the topics not on the broker."""

    behind: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def drained(self) -> bool:
        return not self.behind and not self.missing

    def describe(self) -> str:
        parts = [f"{tp.topic}/{tp.partition}: {n}" for tp, n in sorted(self.behind.items())]
        parts += [f"{name}: missing" for name in self.missing]
        return "drained" if not parts else "behind " + ", ".join(parts)


class GroupLag:
    """``measure(topics)`` as often as needed; one admin client and one probe consumer, reused."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self._admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
        self._consumer: AIOKafkaConsumer = make_consumer(settings, group_id=None, client_suffix="group-lag")
        self._last: dict[TopicPartition, tuple[int, int]] = {}  # (committed, end) at the previous measurement
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> GroupLag:
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._admin.close()

    async def measure(self, topics: Iterable[str]) -> Lag:
        lag = Lag()
        wanted = list(dict.fromkeys(topics))
        if any(topic not in self._partitions for topic in wanted):
            # Fresh metadata, but only while a topic is unknown: the processor creates its internal topic when it
            # starts, and a full metadata request is not cheap on a broker with thousands of topics.
            cluster = await self._consumer._client.fetch_all_metadata()
            for topic in wanted:
                if numbers := cluster.partitions_for_topic(topic):
                    self._partitions[topic] = [TopicPartition(topic, n) for n in sorted(numbers)]
        partitions: list[TopicPartition] = []
        for topic in wanted:
            if topic in self._partitions:
                partitions += self._partitions[topic]
            else:
                lag.missing.append(topic)
        if not partitions:
            return lag
        ends = await self._consumer.end_offsets(partitions)  # read_committed: the last stable offset
        committed = await self._admin.list_consumer_group_offsets(self.group)
        starts = await self._consumer.beginning_offsets(partitions)
        suspects: dict[TopicPartition, int] = {}
        for tp in partitions:
            at = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else starts[tp]
            lag.committed[tp.topic] = lag.committed.get(tp.topic, 0) + at
            if at >= ends[tp]:
                continue
            if self._last.get(tp) == (at, ends[tp]):
                suspects[tp] = at  # standing still: maybe only markers are left
            else:
                lag.behind[tp] = ends[tp] - at
            self._last[tp] = (at, ends[tp])
        if suspects:
            for tp in await self._probe(suspects, ends):
                lag.behind[tp] = ends[tp] - suspects[tp]
        return lag

    async def _probe(self, suspects: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> set[TopicPartition]:
        """The suspects that still hold a record at or after the group's offset."""
        consumer = self._consumer
        wanted = set(ends)
        if consumer.assignment() != wanted:  # assign only when the set changes: assign() logs at info
            consumer.assign(list(wanted))
        consumer.pause(*wanted)
        for tp, at in suspects.items():
            consumer.seek(tp, at)
        consumer.resume(*suspects)
        pending, behind = set(suspects), set()
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        try:
            while pending and time.monotonic() < deadline:
                fetched = await consumer.getmany(*pending, timeout_ms=200)
                for tp, records in fetched.items():
                    if any(record.offset < ends[tp] for record in records):
                        behind.add(tp)
                        pending.discard(tp)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            consumer.pause(*wanted)  # no background fetching between measurements
        return behind | pending


async def wait_drained(settings: Settings, group: str, topics: list[str], *, timeout_s: float = 90.0) -> str:
    """Until ``group`` has nothing left on ``topics`` twice in a row (a stage still producing into the next
    topic is caught by the second look). Returns "" when drained, else the last lag seen."""
    async with GroupLag(settings, group) as probe:
        deadline = time.monotonic() + timeout_s
        stable, lag = 0, Lag(missing=list(topics))
        while time.monotonic() < deadline:
            lag = await probe.measure(topics)
            stable = stable + 1 if lag.drained else 0
            if stable >= 2:
                return ""
            await asyncio.sleep(0.5)
        return lag.describe()
