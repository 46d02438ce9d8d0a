"""`paystream archive` against the real broker and the real moto S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from paystream.config import Settings
from paystream.errors import ConfigurationError
from paystream.kafka import make_producer
from processors.recovery.archive import FlushPolicy, run_archiver
from processors.recovery.archive_format import ArchivedRecord, decode_object
from processors.recovery.archive_store import ArchiveStore

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

LAYOUT = re.compile(
    r"^raw/(?P<topic>[^/]+)/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/(?P=topic)\+(?P<partition>\d+)\+(?P<offset>\d+)\.jsonl\.gz$"
)
FAST = FlushPolicy(max_records=7, max_age_s=0.2, retry_initial_s=0.1, retry_max_s=0.5, poll_timeout_ms=100)


def archive_settings(settings: Settings, endpoint: str, bucket: str) -> Settings:
    # A unique client id gives this test its own archiver consumer group.
    return settings.model_copy(
        update={
            "s3": settings.s3.model_copy(update={"endpoint_url": endpoint, "bucket": bucket, "prefix": "raw"}),
            "kafka": settings.kafka.model_copy(update={"client_id": f"test-{uuid.uuid4().hex[:8]}"}),
        }
    )


def archive_store(settings: Settings) -> ArchiveStore:
    return ArchiveStore(settings.s3, aws_access_key_id="test", aws_secret_access_key="test")


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 60.0) -> None:
    """Poll until ``condition`` holds; the deadline only stops a hung test, it asserts no timing."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


def archived(store: ArchiveStore) -> dict[str, list[ArchivedRecord]]:
    return {obj.key: list(decode_object(store.get(obj.key))) for obj in store.list("raw/")}


@contextlib.asynccontextmanager
async def running_archiver(settings: Settings, store: ArchiveStore) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, policy=FAST, store=store))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


Outgoing = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


async def produce(settings: Settings, records: list[Outgoing]) -> list[ArchivedRecord]:
    """Send (topic, key, value, headers) records; returns them as the broker stored them."""
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        stored = []
        for topic, key, value, headers in records:
            meta = await producer.send_and_wait(topic, value, key=key, headers=headers or None)
            stored.append(
                ArchivedRecord(topic, meta.partition, meta.offset, meta.timestamp, key, value, tuple(headers))
            )
        return stored
    finally:
        await producer.stop()


async def test_archive_round_trip_is_byte_identical_with_the_layout(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = archive_settings(kafka_settings, s3_endpoint, s3_bucket)
    inbox, results = settings.topics.inbox, settings.topics.fetch_results
    sent = await produce(
        settings,
        [(inbox, f"stripe:eu:evt_{i}".encode(), bytes([i]) * 3 + b"\x00\xff{}", [("h", bytes([i]))]) for i in range(20)]
        + [(results, b"mollie:nl:payment:tr_1", b'{"fetched": true}', []) for _ in range(5)]
        + [(inbox, None, b"no key", [("dup", b"1"), ("dup", b"2")])],
    )
    store = archive_store(settings)

    async def all_archived() -> bool:
        return sum(len(lines) for lines in (await asyncio.to_thread(archived, store)).values()) >= len(sent)

    async with running_archiver(settings, store):
        await wait_for(all_archived, "every record in S3")

    objects = await asyncio.to_thread(archived, store)
    for key, records in objects.items():
        match = LAYOUT.match(key)
        assert match, key
        assert {(r.topic, r.partition) for r in records} == {(match["topic"], int(match["partition"]))}
        assert records[0].offset == int(match["offset"])
    found = sorted((r for records in objects.values() for r in records), key=lambda r: (r.topic, r.partition, r.offset))
    assert found == sorted(sent, key=lambda r: (r.topic, r.partition, r.offset))


async def test_archiver_restart_resumes_after_the_committed_offset(
    kafka_settings: Settings, s3_endpoint: str, s3_bucket: str
) -> None:
    settings = archive_settings(kafka_settings, s3_endpoint, s3_bucket)
    store = archive_store(settings)
    first = await produce(settings, [(settings.topics.inbox, b"k", b"first %d" % i, []) for i in range(5)])

    def count_reaches(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return sum(len(v) for v in (await asyncio.to_thread(archived, store)).values()) >= n

        return check

    async with running_archiver(settings, store):
        await wait_for(count_reaches(len(first)), "the first records in S3")
    second = await produce(settings, [(settings.topics.inbox, b"k", b"second %d" % i, []) for i in range(5)])
    async with running_archiver(settings, store):
        await wait_for(count_reaches(len(first) + len(second)), "the second records in S3")

    lines = [r for records in (await asyncio.to_thread(archived, store)).values() for r in records]
    assert sorted(r.offset for r in lines) == sorted(r.offset for r in first + second)


async def test_missing_bucket_stops_the_archiver_with_a_configuration_error(
    kafka_settings: Settings, s3_endpoint: str
) -> None:
    settings = archive_settings(kafka_settings, s3_endpoint, f"no-such-bucket-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigurationError, match="does not exist"):
        await run_archiver(settings, asyncio.Event(), policy=FAST, store=archive_store(settings))
