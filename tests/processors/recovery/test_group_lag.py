"""processors/recovery/group_lag.py and app_state.py against the real broker: transaction markers and aborted
records are not lag; a wipe refuses while the app's group has a member, and finds the internal topics by name."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from paystream.config import ProcessorSettings, Settings
from paystream.errors import InfrastructureError
from paystream.kafka import connection_options, make_consumer
from processors.recovery.app_state import is_internal_topic, local_state_dir, wipe_app_state
from processors.recovery.group_lag import GroupLag, wait_drained

pytestmark = [pytest.mark.kafka]


async def create_topics(settings: Settings, *names: str) -> None:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in names])
    finally:
        await admin.close()


async def delete_topics(settings: Settings, *names: str) -> None:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


async def commit(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = make_consumer(settings, group_id=group, client_suffix="test-commit")
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


async def transactional_topic(settings: Settings, name: str) -> None:
    """Offsets 0-2 committed records, 3 their commit marker, 4-5 aborted records, 6 the abort marker."""
    producer = AIOKafkaProducer(**connection_options(settings.kafka), transactional_id=f"test-{uuid.uuid4().hex}")
    await producer.start()
    try:
        async with producer.transaction():
            for n in range(3):
                await producer.send_and_wait(name, f"kept {n}".encode(), key=b"k")
        await producer.begin_transaction()
        for n in range(2):
            await producer.send_and_wait(name, f"aborted {n}".encode(), key=b"k")
        await producer.abort_transaction()
    finally:
        await producer.stop()


async def test_markers_and_aborted_records_after_the_committed_offset_are_not_lag(kafka_settings: Settings) -> None:
    topic = f"test-lag-{uuid.uuid4().hex[:10]}"
    group = f"test-lag-{uuid.uuid4().hex[:10]}"
    tp = TopicPartition(topic, 0)
    await create_topics(kafka_settings, topic)
    try:
        await transactional_topic(kafka_settings, topic)

        await commit(kafka_settings, group, {tp: 3})  # after the last committed record
        async with GroupLag(kafka_settings, group) as probe:
            first = await probe.measure([topic])
            second = await probe.measure([topic])
        assert first.behind == {tp: 4}  # end 7 - committed 3, not yet probed: the offset may still move
        assert second.drained, second.describe()
        assert await wait_drained(kafka_settings, group, [topic], timeout_s=20) == ""

        await commit(kafka_settings, group, {tp: 1})  # two committed records left
        async with GroupLag(kafka_settings, group) as probe:
            await probe.measure([topic])
            behind = await probe.measure([topic])
        assert behind.behind == {tp: 6}
        assert behind.committed == {topic: 1}
    finally:
        await wipe_app_state(kafka_settings, ProcessorSettings(app_id=group))  # the group
        await delete_topics(kafka_settings, topic)


async def test_a_missing_topic_is_never_drained(kafka_settings: Settings) -> None:
    missing = f"test-lag-missing-{uuid.uuid4().hex[:10]}"
    inbox = kafka_settings.topics.inbox
    async with GroupLag(kafka_settings, "test-lag-nobody") as probe:
        # The inbox was created just before: until the broker's metadata shows it, it is rightly missing too.
        deadline = time.monotonic() + 15
        while inbox in (lag := await probe.measure([inbox, missing])).missing and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    assert lag.missing == [missing]
    assert not lag.drained


def test_internal_topics_are_recognised_by_app_id_not_by_a_shared_prefix() -> None:
    conf = ProcessorSettings(app_id="paystream-processor")
    assert is_internal_topic("paystream-processor-payment-inputs", conf)
    assert is_internal_topic("changelog__paystream-processor--paystream-processor-payment-inputs--default", conf)
    assert is_internal_topic("repartition__paystream-processor--x--y", conf)
    assert not is_internal_topic("paystream-processor-2-payment-inputs", conf)
    assert not is_internal_topic("changelog__paystream-processor-2--paystream-processor-2-payment-inputs--default",
                                 conf)
    assert not is_internal_topic("payments.status.v1", conf)


async def test_wipe_refuses_while_a_member_is_in_the_group_then_removes_everything(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    conf = ProcessorSettings(app_id=f"test-wipe-{uuid.uuid4().hex[:10]}")
    settings = kafka_settings.model_copy(update={"state_dir": tmp_path})
    changelog = f"changelog__{conf.app_id}--{conf.inputs_topic()}--default"
    await create_topics(settings, conf.inputs_topic(), changelog)
    local = local_state_dir(settings, conf.app_id)
    (local / "store").mkdir(parents=True)
    member = make_consumer(settings, conf.inputs_topic(), group_id=conf.app_id, client_suffix="test-member")
    await member.start()
    try:
        await member.getmany(timeout_ms=3000)  # joined
        await member.commit({TopicPartition(conf.inputs_topic(), 0): OffsetAndMetadata(0, "")})
        with pytest.raises(InfrastructureError, match="still has members"):
            await wipe_app_state(settings, conf, timeout_s=2)
        assert local.is_dir()  # nothing was touched
    finally:
        await member.stop()  # leaves the group

    wiped = await wipe_app_state(settings, conf)

    assert wiped.group_deleted
    assert wiped.topics == sorted([conf.inputs_topic(), changelog])
    assert wiped.state_dir == local and not local.exists()
    again = await wipe_app_state(settings, conf)  # idempotent
    assert (again.group_deleted, again.topics, again.state_dir) == (False, [], None)
