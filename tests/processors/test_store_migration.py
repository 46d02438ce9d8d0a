"""Upgrading from the two-stage processor: its store's changelog (``changelog__{app}--{app}-payment-inputs--default``)
is copied into the single stage's (``paystream process --migrate-store``), and a single-stage worker refuses to
start on an empty store while the two-stage one still holds the state.

The two-stage changelog is made from a real one: a worker builds its store, its changelog is copied under the
two-stage name (headers included: the column family and the offsets each change was made at), and the
single-stage changelog and local state are deleted — what a deployment of the two-stage processor leaves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from processor_harness import (
    EXPECTED_LIFECYCLE,
    adyen_lifecycle,
    drop_topics,
    events_of,
    fresh_settings,
    processor_settings,
    read_until,
    send_inbox,
    start_worker,
    summary,
)

from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer, make_producer
from processors.internal_topics import changelog_topic, migrate_store, two_stage_changelog
from processors.recovery.app_state import local_state_dir
from processors.topology import stream_id

pytestmark = pytest.mark.kafka


async def copy_topic(settings: Settings, source: str, target: str) -> int:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id="test-copy")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(target, settings.topics.partitions, 1,
                                             topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    consumer = make_consumer(settings, group_id=None, client_suffix="test-copy")
    producer = make_producer(settings, client_suffix="test-copy")
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        partitions = [TopicPartition(source, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    await producer.send_and_wait(target, record.value, key=record.key, partition=tp.partition,
                                                 headers=list(record.headers))
                    copied += 1
    finally:
        await consumer.stop()
        await producer.stop()
    return copied


async def delete_topics(settings: Settings, *names: str) -> None:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id="test-delete")
    await admin.start()
    try:
        await admin.delete_topics(list(names), timeout_ms=30_000)
    finally:
        await admin.close()


async def test_the_two_stage_store_is_migrated_and_the_single_stage_continues_every_payment(
        base_settings: Settings, kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = await fresh_settings(base_settings, partitions=3, tag="mg")
    conf = processor_settings()
    settings = settings.model_copy(update={"state_dir": tmp_path / "state"})
    new_changelog = changelog_topic(conf.app_id, stream_id(settings, conf))
    payments = {f"MG{n}": adyen_lifecycle(f"MG{n}", settings.topics.partitions) for n in range(4)}
    keys = [f"adyen:main:payment:{psp}" for psp in payments]
    try:
        worker = start_worker(settings, conf, tmp_path)
        try:
            await send_inbox(settings, [delivery for lifecycle in payments.values() for delivery in lifecycle[:2]])
            await read_until(settings, settings.topics.status, lambda records: len(records) >= 8, worker=worker)
        finally:
            assert worker.stop() == 0, worker.log_tail()
        copied = await copy_topic(settings, new_changelog, two_stage_changelog(conf))
        assert copied >= len(payments)
        await delete_topics(settings, new_changelog)
        shutil.rmtree(local_state_dir(settings, conf.app_id))

        refused = start_worker(settings, conf, tmp_path, "refused")
        assert refused.process.wait(120) != 0
        assert "--migrate-store" in refused.log_tail()

        lines: list[str] = []
        assert migrate_store(settings, conf, new_changelog, progress=lines.append) == copied
        assert any(two_stage_changelog(conf) in line for line in lines)

        worker = start_worker(settings, conf, tmp_path, "migrated")
        try:
            await send_inbox(settings, [lifecycle[2] for lifecycle in payments.values()])
            records = await read_until(settings, settings.topics.status, lambda records: len(records) >= 12,
                                       worker=worker)
        finally:
            assert worker.stop() == 0, worker.log_tail()
    finally:
        await drop_topics(settings, conf.app_id)
    events = events_of(records)
    for key in keys:
        mine = [event for event in events if event["subject"] == key]
        # Sequence 3 follows 1 and 2: the migrated store knew the payment; nothing was emitted twice.
        assert [summary(event) for event in mine] == EXPECTED_LIFECYCLE, key
        assert [event["data"]["sequence"] for event in mine] == [1, 2, 3], key
