"""The durable delayed store through the real broker (ingest/fetch/delayed.py): a poll scheduled hours ahead
is committed past at once, kept in the compacted store, superseded by a newer stale poll of its payment,
deleted (tombstone) when done, and moves with its partition to another fetcher instance.

The SIGKILL scenario (a fetcher process killed while polls are scheduled hours ahead) is in
tests/reliability/test_rel_fault_fetcher.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fetch_helpers import ResultReader, eventually, fetch_request, read_records
from provider_double.server import ProviderDouble
from test_fetch_service_kafka import options

from ingest.fetch.delayed import DelayedStore, store_key
from ingest.fetch.service import _Fetcher
from paystream.config import Settings
from paystream.dlq import SOURCE_OFFSET
from paystream.kafka import make_consumer, make_producer
from paystream.metrics import FETCH_DELAYED, FETCH_DELAYED_OVERDUE, FETCH_DELAYED_SUPERSEDED
from schemas.envelopes import FetchReason, FetchRequest, from_rfc3339

pytestmark = pytest.mark.kafka

HOURS = 3600.0
THRESHOLD_S = 1.0  # requests due later than this go to the store (short, so the tests stay short)


class RunningFetcher:
    """The fetcher of ``paystream fetch`` in this process, with a handle on its delayed store."""

    def __init__(self, settings: Settings, group_id: str, **overrides: object) -> None:
        self.stop = asyncio.Event()
        opts = options(group_id=group_id, delayed_threshold_s=THRESHOLD_S, **overrides)
        self.fetcher = _Fetcher(settings, self.stop, opts)
        self.task = asyncio.create_task(self.fetcher.run())

    def held(self) -> dict[str, FetchRequest]:
        return self.fetcher.delayed.held() if self.fetcher.delayed is not None else {}

    def owns(self) -> set[int]:
        """The partitions this instance consumes (assigned, delayed store loaded)."""
        if not self.fetcher.ready.is_set() or self.fetcher.delayed is None:
            return set()
        assigned = {tp.partition for tp in self.fetcher.consumer.assignment()}
        return {p for p in assigned if self.fetcher.delayed.ready(p)}

    async def consuming(self, partitions: int) -> None:
        """Wait until this instance alone consumes every partition (so the next requests it reads are fresh)."""
        await eventually(lambda: self.owns() == set(range(partitions)), within_s=60)

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@pytest.fixture
async def start(
    kafka_settings: Settings, settings_with: Callable[..., Settings]
) -> AsyncIterator[Callable[..., RunningFetcher]]:
    """Starts fetchers (``group_id`` shared when given) that are shut down after the test."""
    settings = settings_with(kafka_settings)
    default_group = f"fetch-delayed-{uuid.uuid4().hex[:8]}"
    running: list[RunningFetcher] = []

    def make(group_id: str | None = None) -> RunningFetcher:
        fetcher = RunningFetcher(settings, group_id or default_group)
        running.append(fetcher)
        return fetcher

    yield make
    for fetcher in running:
        if not fetcher.task.done():
            await fetcher.shutdown()


def request(object_id: str, *, delay_s: float, request_id: str | None = None, reason: FetchReason = "stale",
            attempt: int = 1) -> FetchRequest:
    return fetch_request("stripe", "main", "payment_intent", object_id, reason=reason, delay_s=delay_s,
                         request_id=request_id or f"{object_id}:{reason}:{uuid.uuid4().hex[:6]}", attempt=attempt)


async def publish_at(settings: Settings, *placed: tuple[int, FetchRequest]) -> None:
    """Each request to the given partition of the requests topic, in order."""
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        for partition, req in placed:
            await producer.send_and_wait(settings.topics.fetch_requests, key=req.key, value=req.to_bytes(),
                                         partition=partition)
    finally:
        await producer.stop()


async def store_latest(settings: Settings) -> dict[str, tuple[int, FetchRequest | None, int | None]]:
    """The delayed store's latest record per key: (partition, request or None for a tombstone, source offset)."""
    latest: dict[str, tuple[int, FetchRequest | None, int | None]] = {}
    for record in await read_records(settings, settings.topics.fetch_delayed):
        headers = dict(record.headers or ())
        source = int(headers[SOURCE_OFFSET]) if SOURCE_OFFSET in headers else None
        value = FetchRequest.from_bytes(record.value) if record.value is not None else None
        latest[record.key.decode()] = (record.partition, value, source)
    return latest


async def committed(settings: Settings, group_id: str) -> dict[int, int | None]:
    consumer = make_consumer(settings, group_id=group_id, client_suffix="test-offsets")
    await consumer.start()
    try:
        topic = settings.topics.fetch_requests
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(settings.topics.partitions)}
    finally:
        await consumer.stop()


async def until_committed(settings: Settings, group_id: str, expected: dict[int, int]) -> None:
    for _ in range(300):
        offsets = await committed(settings, group_id)
        if all(offsets.get(p) == n for p, n in expected.items()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"committed {offsets}, expected {expected}")


def put_intents(double: ProviderDouble, *ids: str) -> None:
    for object_id in ids:
        double.set_object("stripe", "payment_intent", object_id, {"id": object_id, "status": "processing"})


async def test_a_poll_held_for_hours_does_not_hold_back_the_commit_behind_it(
    double: ProviderDouble, kafka_settings: Settings, start: Callable[..., RunningFetcher]
) -> None:
    put_intents(double, "pi_held", "pi_now", "pi_soon")
    held = request("pi_held", delay_s=6 * HOURS)
    now, soon = request("pi_now", delay_s=0, reason="thin_push"), request("pi_soon", delay_s=0.5, reason="thin_push")
    fetcher = start()
    group = fetcher.fetcher.options.group_id
    await fetcher.consuming(kafka_settings.topics.partitions)
    async with ResultReader(kafka_settings) as reader:
        await publish_at(kafka_settings, (0, held), (0, now), (0, soon))
        await eventually(lambda: len(reader.results) == 2, within_s=60)
        # The commit passes the held request (offset 0) while it waits, hours before it is due.
        await until_committed(kafka_settings, group, {0: 3})
    assert {r.request_id for r in reader.results} == {now.request_id, soon.request_id}
    assert fetcher.held() == {store_key(held): held}
    assert fetcher.fetcher.delayed is not None
    fetcher.fetcher.delayed.report()
    assert FETCH_DELAYED.labels("stripe")._value.get() == 1
    assert FETCH_DELAYED_OVERDUE.labels("stripe")._value.get() == 0
    assert (await store_latest(kafka_settings))[store_key(held)] == (0, held, 0)  # same partition as its source
    await fetcher.shutdown()
    assert await committed(kafka_settings, group) == {0: 3, 1: None, 2: None}
    assert double.count("stripe") == 2


async def test_a_newer_stale_poll_supersedes_the_older_and_a_done_poll_is_deleted(
    double: ProviderDouble, kafka_settings: Settings, start: Callable[..., RunningFetcher]
) -> None:
    put_intents(double, "pi_chain")
    first = request("pi_chain", delay_s=1 * HOURS)
    second = request("pi_chain", delay_s=2.0)  # the chain was re-armed (news came): the newest link wins
    retry = request("pi_chain", delay_s=1 * HOURS, reason="thin_push", attempt=2)  # its own key: never replaced
    superseded_before = FETCH_DELAYED_SUPERSEDED.labels("stripe")._value.get()
    fetcher = start()
    await fetcher.consuming(kafka_settings.topics.partitions)
    async with ResultReader(kafka_settings) as reader:
        await publish_at(kafka_settings, (1, first), (1, second), (1, retry), (1, second))  # `second` re-emitted
        await eventually(lambda: len(reader.results) >= 1, within_s=60)
        await until_committed(kafka_settings, fetcher.fetcher.options.group_id, {1: 4})
        await asyncio.sleep(2 * THRESHOLD_S)  # room for a wrong second fetch of `second` or a fetch of `first`
    assert [r.request_id for r in reader.results] == [second.request_id]
    assert from_rfc3339(reader.results[0].fetched_at) >= from_rfc3339(second.not_before)
    assert FETCH_DELAYED_SUPERSEDED.labels("stripe")._value.get() == superseded_before + 1
    assert fetcher.held() == {store_key(retry): retry}
    latest = await store_latest(kafka_settings)
    assert latest == {
        f"{first.payment_key}|stale": (1, None, None),  # tombstone once `second` was fetched
        f"{retry.payment_key}|{retry.request_id}|2": (1, retry, 2),
    }


async def test_a_poll_finishing_after_it_was_superseded_leaves_the_newer_one_in_the_store(
    double: ProviderDouble, kafka_settings: Settings, start: Callable[..., RunningFetcher]
) -> None:
    put_intents(double, "pi_race")
    fetcher = start()
    await fetcher.consuming(kafka_settings.topics.partitions)
    running_one = request("pi_race", delay_s=3.0)  # held in the store (due later than THRESHOLD_S)
    newer = request("pi_race", delay_s=6 * HOURS)
    double.hold("stripe")  # the provider hangs: `running_one` is in flight when `newer` arrives
    async with ResultReader(kafka_settings) as reader:
        await publish_at(kafka_settings, (2, running_one))
        await eventually(lambda: double.count("stripe") == 1, within_s=60)
        assert fetcher.held() == {store_key(running_one): running_one}  # in the store, and running
        await asyncio.sleep(0.5)
        assert fetcher.fetcher.delayed is not None
        fetcher.fetcher.delayed.report()
        assert FETCH_DELAYED_OVERDUE.labels("stripe")._value.get() > 0.5  # past its not-before, not done
        await publish_at(kafka_settings, (2, newer))
        await eventually(lambda: fetcher.held() == {store_key(newer): newer}, within_s=30)
        await until_committed(kafka_settings, fetcher.fetcher.options.group_id, {2: 2})
        double.release("stripe")
        await eventually(lambda: len(reader.results) == 1, within_s=30)
        await asyncio.sleep(1.0)  # a wrong tombstone would be written now
    assert reader.results[0].request_id == running_one.request_id
    assert (await store_latest(kafka_settings))[store_key(newer)] == (2, newer, 1)
    assert fetcher.held() == {store_key(newer): newer}


async def test_scheduled_polls_move_with_their_partition_to_the_other_instance(
    double: ProviderDouble, kafka_settings: Settings, start: Callable[..., RunningFetcher]
) -> None:
    partitions = kafka_settings.topics.partitions
    first = start()
    group = first.fetcher.options.group_id
    await first.consuming(partitions)
    due = [request(f"pi_due{n}", delay_s=25.0) for n in range(6)]
    later = [request(f"pi_later{n}", delay_s=6 * HOURS) for n in range(6)]
    put_intents(double, *(r.object_id for r in due + later))
    placed = [(n % partitions, r) for n, r in enumerate(due + later)]
    await publish_at(kafka_settings, *placed)
    await until_committed(kafka_settings, group, {p: 4 for p in range(partitions)})
    assert set(first.held()) == {store_key(r) for r in due + later}

    # A second instance joins: the partitions (and with them the scheduled polls) are shared out.
    second = start(group)
    await eventually(lambda: first.owns() and second.owns() and first.owns() | second.owns() == set(range(partitions))
                     and len(first.held()) + len(second.held()) == 12, within_s=60)
    assert not set(first.held()) & set(second.held())
    for fetcher in (first, second):
        assert {store_key(r) for p, r in placed if p in fetcher.owns()} == set(fetcher.held())

    # The first leaves: the second loads the rest and fetches the due polls when they are due, once each.
    async with ResultReader(kafka_settings) as reader:
        await first.shutdown()
        await eventually(lambda: len(second.held()) == 12, within_s=60)
        await eventually(lambda: len(reader.results) >= len(due), within_s=60)
        await asyncio.sleep(1.0)
    assert sorted(r.request_id for r in reader.results) == sorted(r.request_id for r in due)
    not_before = {r.request_id: from_rfc3339(r.not_before) for r in due}
    for result in reader.results:
        lateness = (from_rfc3339(result.fetched_at) - not_before[result.request_id]).total_seconds()
        assert 0 <= lateness < 3, lateness
    await eventually(lambda: set(second.held()) == {store_key(r) for r in later}, within_s=10)
    latest = await store_latest(kafka_settings)
    assert {key for key, (_, value, _) in latest.items() if value is not None} == {store_key(r) for r in later}


async def test_a_partition_is_consumed_only_once_its_store_partition_is_loaded(
    double: ProviderDouble, kafka_settings: Settings, start: Callable[..., RunningFetcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put_intents(double, "pi_order")
    first = start()
    group = first.fetcher.options.group_id
    await first.consuming(kafka_settings.topics.partitions)
    older, newer = request("pi_order", delay_s=6 * HOURS), request("pi_order", delay_s=7 * HOURS)
    await publish_at(kafka_settings, (0, older))
    await until_committed(kafka_settings, group, {0: 1})
    await first.shutdown()
    await publish_at(kafka_settings, (0, newer))  # read by the next instance, right after its assignment

    slow_read = DelayedStore._read

    async def read_slowly(self: DelayedStore, partitions: list[int]) -> Any:
        found = await slow_read(self, partitions)
        await asyncio.sleep(2.0)  # a long load: what it read is older than anything written meanwhile
        return found

    monkeypatch.setattr(DelayedStore, "_read", read_slowly)
    second = start(group)
    await second.consuming(kafka_settings.topics.partitions)
    await until_committed(kafka_settings, group, {0: 2})
    # Read before the load, `newer` would have been overwritten in memory by the loaded `older`.
    assert second.held() == {store_key(newer): newer}
    assert (await store_latest(kafka_settings))[store_key(newer)] == (0, newer, 1)


async def test_a_store_with_fewer_partitions_than_the_requests_topic_is_grown(
    double: ProviderDouble, kafka_settings: Settings, start: Callable[..., RunningFetcher]
) -> None:
    # E.g. partitions were added to the requests topic: store partition p keeps meaning requests partition p.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(kafka_settings.topics.fetch_delayed, 1, 1,
                                            topic_configs={"cleanup.policy": "compact"})])
        put_intents(double, "pi_grown")
        held = request("pi_grown", delay_s=6 * HOURS)
        fetcher = start()
        await fetcher.consuming(kafka_settings.topics.partitions)
        described = await admin.describe_topics([kafka_settings.topics.fetch_delayed])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == kafka_settings.topics.partitions
    await publish_at(kafka_settings, (2, held))
    await until_committed(kafka_settings, fetcher.fetcher.options.group_id, {2: 1})
    assert (await store_latest(kafka_settings))[store_key(held)] == (2, held, 0)
