"""paystream.consume.Follower on a real broker. The topics are written the way the processor writes them: each
status event and its payment's state document in ONE Kafka transaction (processors/topology.py), the
document built by processors/state_doc.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from paystream.config import Settings
from paystream.consume import Follower, Gap, InvalidEvent, MemoryPositions, Origin, Position, StatusEvent
from paystream.kafka import connection_options, make_producer
from processors.payment_record import PaymentRecord
from processors.scheduling import PollSchedule
from processors.state_doc import document
from schemas.event import event_id, serialize_event
from schemas.join import advance
from schemas.observation import Observation
from schemas.status import ObjectKind, PaymentStatus, Source

pytestmark = pytest.mark.kafka
NOW = datetime(2025, 5, 1, 12, tzinfo=UTC)
_TEMPLATE = advance(None, Observation(
    provider="adyen", account="main", object_type="payment", object_id="T", kind=ObjectKind.PAYMENT,
    status=PaymentStatus.AUTHORIZED, provider_status="AUTHORISATION:true", source=Source.PUSH, evidence_id="d1",
    occurred_at=NOW, observed_at=NOW, amount=1000, currency="EUR"), NOW).event


def event(payment: str, sequence: int, epoch: int = 0) -> tuple[bytes, bytes]:
    """(key, value) of event ``(epoch, sequence)`` of payment ``adyen:main:payment:{payment}``."""
    assert _TEMPLATE is not None
    key = f"adyen:main:payment:{payment}"
    raw: dict[str, Any] = orjson.loads(serialize_event(_TEMPLATE))
    raw.update(id=event_id(key, sequence, epoch), subject=key)
    raw["data"].update(payment_key=key, object_id=payment, sequence=sequence, epoch=epoch)
    return key.encode(), orjson.dumps(raw)


class Pair:
    """Writes (status event, state document) pairs in transactions, as the processor does."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings, self.producer = settings, producer

    async def send(self, key: bytes, value: bytes) -> None:
        topics = self.settings.topics
        record = PaymentRecord(NOW.timestamp(), last_event=value.decode())
        await self.producer.send_and_wait(topics.status, value, key=key)
        await self.producer.send_and_wait(topics.state, document(key.decode(), record, PollSchedule([60], 3600), NOW),
                                          key=key)

    async def commit(self, *events: tuple[bytes, bytes]) -> None:
        async with self.producer.transaction():
            for key, value in events:
                await self.send(key, value)


@asynccontextmanager
async def writer(settings: Settings) -> AsyncIterator[Pair]:
    producer = make_producer(settings, client_suffix="test-writer", transactional_id=f"t-{uuid.uuid4().hex}")
    await producer.start()
    try:
        yield Pair(settings, producer)
    finally:
        await producer.stop()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Position, Origin]] = []
        self.gaps: list[Gap] = []

    async def handle(self, event: StatusEvent, origin: Origin) -> None:
        self.seen.append((event.data.object_id, event.position, origin))

    def by_payment(self) -> dict[str, list[tuple[Position, Origin]]]:
        grouped: dict[str, list[tuple[Position, Origin]]] = {}
        for payment, position, origin in self.seen:
            grouped.setdefault(payment, []).append((position, origin))
        return grouped


@asynccontextmanager
async def following(settings: Settings, group: str, recorder: Recorder,
                    **options: Any) -> AsyncIterator[tuple[Follower, asyncio.Task[None]]]:
    follower = Follower(settings, recorder.handle, group_id=group, on_gap=recorder.gaps.append, poll_ms=100,
                        commit_interval_s=0.2, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    try:
        await asyncio.wait_for(asyncio.shield(follower.ready.wait()), 60)
        yield follower, task
    finally:
        stop.set()
        await asyncio.wait([task], timeout=30)
        assert task.done(), "the follower did not stop"
    if task.exception() is not None and not isinstance(task.exception(), InvalidEvent):
        raise AssertionError("the follower failed") from task.exception()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_bootstrap_then_follow_drops_repeats_reports_gaps_and_resumes(kafka_settings: Settings) -> None:
    group, recorder = f"ps-test-follow-{uuid.uuid4().hex[:8]}", Recorder()
    async with writer(kafka_settings) as pair:
        for sequence in (1, 2, 3):  # A's first three events, before the follower exists
            await pair.commit(event("A", sequence))
        async with following(kafka_settings, group, recorder) as (follower, _):
            assert follower.stats.bootstrapped
            await pair.commit(event("A", 4), event("B", 1))
            await pair.commit(event("A", 4))  # an at-least-once repeat
            await pair.commit(event("B", 2), event("C", 1))
            await pair.commit(event("C", 3))  # C's event 2 never reaches the stream
            await pair.commit(event("A", 1, epoch=1))  # a rebuild's new derivation
            await pair.commit(event("A", 5))  # the old derivation, late
            await until(lambda: follower.stats.events_read >= 11, f"events read: {follower.stats}")
            stats = follower.stats
        assert recorder.by_payment() == {  # in order per payment (payments in other partitions interleave)
            "A": [(Position(0, 3), "state"), (Position(0, 4), "status"), (Position(1, 1), "status")],
            "B": [(Position(0, 1), "status"), (Position(0, 2), "status")],
            "C": [(Position(0, 1), "status"), (Position(0, 3), "status")]}
        # A's first three events are re-read by the bootstrap's overlap and dropped, like the repeated fourth.
        assert (stats.duplicates, stats.stale_epochs, stats.new_epochs) == (4, 1, 1)
        assert recorder.gaps == [Gap("adyen:main:payment:C", Position(0, 1), Position(0, 3), 1, "stream")]
        print(f"\nfirst run: {stats}")

        # A restart resumes from the committed offsets: no bootstrap, only what came after.
        await pair.commit(event("D", 1))
        again = Recorder()
        async with following(kafka_settings, group, again) as (follower, _):
            await until(lambda: bool(again.seen), "the event written while the follower was down")
            assert not follower.stats.bootstrapped
        assert again.seen == [("D", Position(0, 1), "status")]


async def test_a_transaction_open_during_the_bootstrap_is_neither_missed_nor_doubled(
        kafka_settings: Settings) -> None:
    recorder = Recorder()
    async with writer(kafka_settings) as pair:
        await pair.commit(event("A", 1))
        await pair.producer.begin_transaction()
        await pair.send(*event("B", 1))  # the state document is appended, its transaction still open
        follower = Follower(kafka_settings, recorder.handle, group_id=f"ps-test-open-{uuid.uuid4().hex[:8]}",
                            poll_ms=100)
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop))
        await asyncio.sleep(3)
        assert not follower.ready.is_set(), "the bootstrap must wait for the open transaction"
        committed_at = time.monotonic()
        await pair.producer.commit_transaction()
        await asyncio.wait_for(follower.ready.wait(), 30)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.wait_for(task, 30)
    print(f"\nready {time.monotonic() - committed_at:.2f} s after the commit; {follower.stats}")
    assert sorted(recorder.seen) == [("A", Position(0, 1), "state"), ("B", Position(0, 1), "state")]
    assert follower.stats.duplicates == 2  # both again in the status topic, within the overlap


async def test_an_invalid_record_stops_the_follower_where_it_is_unless_told_to_skip(
        kafka_settings: Settings) -> None:
    group = f"ps-test-invalid-{uuid.uuid4().hex[:8]}"
    async with writer(kafka_settings) as pair:
        first = Recorder()
        async with following(kafka_settings, group, first) as (follower, task):
            key, value = event("A", 1)
            broken = orjson.loads(value)
            broken["data"]["sequence"] = 0
            async with pair.producer.transaction():
                await pair.producer.send_and_wait(kafka_settings.topics.status, orjson.dumps(broken), key=key)
            await pair.commit(event("A", 2))
            await asyncio.wait([task], timeout=30)
            assert task.done() and isinstance(task.exception(), InvalidEvent)
            error = str(task.exception())
        assert f"{kafka_settings.topics.status}/" in error and "$.data.sequence: 0 is less than the minimum" in error
        assert first.seen == []

        skipped: list[InvalidEvent] = []
        second = Recorder()
        async with following(kafka_settings, group, second, on_invalid=skipped.append) as (follower, _):
            await until(lambda: bool(second.seen), "the event after the invalid one")
        assert len(skipped) == 1 and follower.stats.invalid == 1
        assert second.seen == [("A", Position(0, 2), "status")]


async def test_a_store_that_knows_more_drops_what_it_already_applied(kafka_settings: Settings) -> None:
    store = MemoryPositions()
    await store.put("adyen:main:payment:A", Position(0, 2))
    recorder = Recorder()
    async with writer(kafka_settings) as pair:
        for sequence in (1, 2, 3):
            await pair.commit(event("A", sequence))
        async with following(kafka_settings, f"ps-test-store-{uuid.uuid4().hex[:8]}", recorder,
                             store=store):
            await pair.commit(event("A", 4))
            await until(lambda: len(recorder.seen) >= 2, f"{recorder.seen}")
    assert recorder.seen == [("A", Position(0, 3), "state"), ("A", Position(0, 4), "status")]
    assert await store.get("adyen:main:payment:A") == Position(0, 4)


async def test_a_follower_behind_retention_bootstraps_again_instead_of_jumping(kafka_settings: Settings) -> None:
    """Retention deleted records the group had not read yet: resuming at the log start would look like a
    gap on every payment; the follower reads the state topic again instead."""
    group, first = f"ps-test-retention-{uuid.uuid4().hex[:8]}", Recorder()
    async with writer(kafka_settings) as pair:
        async with following(kafka_settings, group, first):
            await pair.commit(event("A", 1))
            await until(lambda: bool(first.seen), "A's first event")
        for sequence in (2, 3, 4):  # while the follower is down
            await pair.commit(event("A", sequence))
    admin = AIOKafkaAdminClient(**connection_options(kafka_settings.kafka))
    await admin.start()
    try:  # retention: every status record so far is gone
        partitions = [TopicPartition(kafka_settings.topics.status, p) for p in range(kafka_settings.topics.partitions)]
        await admin.delete_records({tp: RecordsToDelete(before_offset=-1) for tp in partitions}, timeout_ms=10_000)
    finally:
        await admin.close()
    second = Recorder()
    async with following(kafka_settings, group, second, bootstrap_overlap_s=0) as (follower, _):
        assert follower.stats.bootstrapped
    assert second.seen == [("A", Position(0, 4), "state")] and second.gaps == []
