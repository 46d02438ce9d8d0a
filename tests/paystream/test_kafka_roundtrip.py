"""The real broker: acks=all round trip and idempotent topic creation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from paystream.config import Settings, TopicSettings
from paystream.kafka import ensure_topics, make_consumer, make_producer

pytestmark = pytest.mark.kafka


async def test_produce_with_acks_all_then_consume_gives_the_same_bytes(kafka_settings: Settings) -> None:
    topic = kafka_settings.topics.inbox
    payloads = [os.urandom(64) + bytes(range(256)), b"", b"\x00" * 10]
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        metadata = [await producer.send_and_wait(topic, value, key=b"k1") for value in payloads]
    finally:
        await producer.stop()
    assert len({m.partition for m in metadata}) == 1  # one key, one partition
    consumer = make_consumer(kafka_settings, topic, group_id=None)
    await consumer.start()
    try:
        received = []
        while len(received) < len(payloads):
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records within 5 s"
            for records in batch.values():
                received.extend(records)
    finally:
        await consumer.stop()
    assert [r.value for r in received] == payloads
    assert [r.key for r in received] == [b"k1"] * 3
    assert [r.offset for r in received] == [m.offset for m in metadata]


async def test_topic_creation_is_idempotent(kafka_settings: Settings) -> None:
    # The fixture created them once already; a second and third call create nothing and do not fail.
    assert await ensure_topics(kafka_settings) == []
    assert await ensure_topics(kafka_settings) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(kafka_settings.topics.all_names())
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    assert partitions == {name: kafka_settings.topics.partitions for name in kafka_settings.topics.all_names()}


async def test_fresh_topics_get_partitions_and_retention_from_configuration(
    kafka_settings: Settings, fresh_topics: Callable[..., TopicSettings]
) -> None:
    topics = fresh_topics(kafka_settings.topics, partitions=2).model_copy(update={"dlq_retention_ms": 123456789})
    settings = kafka_settings.model_copy(update={"topics": topics})
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(topics.all_names())
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        # A just-created topic's configuration reaches the broker's metadata cache a moment later.
        for _ in range(50):
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topics.dlq)])
            entries = {entry[0]: entry[1] for entry in responses[0].resources[0][4]}
            if entries:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    assert entries["retention.ms"] == "123456789"
