"""Durable sweep cursors, kept in a compacted Kafka topic (key = ``provider:account:sweep``).

Kafka, not local disk: a fetcher pod may restart anywhere. The latest record per key is the cursor;
:meth:`CursorStore.refresh` reads up to the end of the topic, so a replica that takes over the sweeps
continues where the previous one stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer
from paystream.logs import get_logger

log = get_logger(__name__)


def cursor_topic_for(settings: Settings) -> str:
    return settings.topics.fetch_cursors


async def ensure_cursor_topic(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id=f"{settings.kafka.client_id}-admin")
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return
        rf = settings.topics.replication_factor
        spec = NewTopic(
            name=topic,
            num_partitions=1,
            replication_factor=rf,
            topic_configs={"cleanup.policy": "compact", "min.insync.replicas": str(min(2, rf))},
        )
        try:
            await admin.create_topics([spec])
            log.info("topics_created", topics=[topic], partitions=1)
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


class CursorStore:
    def __init__(self, settings: Settings, topic: str, producer: AIOKafkaProducer) -> None:
        self.topic = topic
        self._settings = settings
        self._producer = producer
        self._values: dict[str, dict[str, Any]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await ensure_cursor_topic(self._settings, self.topic)
        # No group: this reader assigns itself every partition and reads from the start.
        self._consumer = make_consumer(self._settings, group_id=None, client_suffix="fetch-cursors")
        await self._consumer.start()
        await self._consumer.topics()  # loads the cluster metadata, including the cursor topic
        partitions = self._consumer.partitions_for_topic(self.topic) or {0}
        self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        await self._consumer.seek_to_beginning()
        await self.refresh()

    async def refresh(self) -> None:
        """Read every cursor record up to the current end of the topic."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        async with self._lock:
            assignment = list(consumer.assignment())
            ends = await consumer.end_offsets(assignment)
            while await self._behind(consumer, ends):
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        if record.key is None:
                            continue
                        key = record.key.decode()
                        if record.value is None:
                            self._values.pop(key, None)
                        else:
                            self._values[key] = orjson.loads(record.value)

    @staticmethod
    async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return True
        return False

    def get(self, key: str) -> dict[str, Any] | None:
        return self._values.get(key)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a cursor; returns once Kafka acknowledged it (acks=all)."""
        await self._producer.send_and_wait(self.topic, key=key.encode(), value=orjson.dumps(value))
        self._values[key] = value

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
