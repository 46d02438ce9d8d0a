"""S3 going away in the middle of archiving: nothing lost, nothing archived twice.

The shared moto server must stay up for everyone, so these tests start their OWN moto server on another
loopback port and stop it. moto keeps objects in memory only: after a real stop (kill) and start the
server is empty, so that test snapshots the archive before the stop and checks the union. The second
test freezes the server (SIGSTOP/SIGCONT) instead, which keeps its memory and reproduces the nastier
failure: uploads time out on our side yet land on the server later, and are then uploaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import boto3
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from paystream.config import Settings
from paystream.kafka import connection_options, make_producer
from paystream.metrics import registry
from processors.recovery.archive import FlushPolicy, run_archiver
from processors.recovery.archive_format import ArchivedRecord, decode_object
from processors.recovery.archive_store import ArchiveStore

pytestmark = [pytest.mark.kafka, pytest.mark.s3]

POLICY = FlushPolicy(max_records=4, max_age_s=0.2, retry_initial_s=0.1, retry_max_s=0.5, poll_timeout_ms=100)
BUCKET = "paystream-outage"


class MotoServer:
    """A moto S3 server subprocess on a port of its own."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                break
            if self.process.poll() is not None:
                raise RuntimeError("moto_server exited at start")
            time.sleep(0.05)
        self.client().create_bucket(Bucket=BUCKET)

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


def outage_settings(settings: Settings, endpoint: str) -> Settings:
    return settings.model_copy(
        update={
            "s3": settings.s3.model_copy(update={"endpoint_url": endpoint, "bucket": BUCKET, "prefix": "raw"}),
            "kafka": settings.kafka.model_copy(update={"client_id": f"test-{uuid.uuid4().hex[:8]}"}),
        }
    )


def store_for(settings: Settings) -> ArchiveStore:
    # Short timeouts: a frozen server costs a second per attempt, not a minute.
    return ArchiveStore(
        settings.s3, connect_timeout_s=1, read_timeout_s=1, aws_access_key_id="test", aws_secret_access_key="test"
    )


def upload_errors() -> float:
    return registry.get_sample_value("paystream_archive_uploads_total", {"outcome": "error"}) or 0.0


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 90.0) -> None:
    """Poll until ``condition`` holds; the deadline only stops a hung test, it asserts no timing."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


async def produce(settings: Settings, count: int, tag: str) -> set[tuple[int, int]]:
    """``count`` inbox records spread over the partitions; returns their (partition, offset)."""
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        sent = [
            await producer.send(settings.topics.inbox, f"{tag} {i}".encode(), key=f"key-{i}".encode())
            for i in range(count)
        ]
        return {((meta := await future).partition, meta.offset) for future in sent}
    finally:
        await producer.stop()


def lines_in(store: ArchiveStore) -> list[ArchivedRecord]:
    return [record for obj in store.list("raw/") for record in decode_object(store.get(obj.key))]


def archived_positions(store: ArchiveStore) -> Callable[[], Awaitable[list[tuple[int, int]]]]:
    async def positions() -> list[tuple[int, int]]:
        with contextlib.suppress(Exception):  # the server may be starting
            return [(r.partition, r.offset) for r in await asyncio.to_thread(lines_in, store)]
        return []

    return positions


async def committed_total(settings: Settings) -> int:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{settings.kafka.client_id}-archiver")
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings.topics.inbox)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def running_archiver(settings: Settings, store: ArchiveStore) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, policy=POLICY, store=store))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_s3_stopped_and_started_again_archives_every_record_exactly_once(
    kafka_settings: Settings, moto: MotoServer
) -> None:
    settings = outage_settings(kafka_settings, moto.endpoint)
    store = store_for(settings)
    positions = archived_positions(store)
    before = await produce(settings, 20, "before")

    async with running_archiver(settings, store):

        async def before_done() -> bool:
            return len(await positions()) >= len(before) and await committed_total(settings) >= len(before)

        await wait_for(before_done, "the first records archived and committed")
        snapshot = await positions()  # moto forgets everything when stopped

        moto.stop()
        errors = upload_errors()
        during = await produce(settings, 20, "during")

        async def failing() -> bool:
            return upload_errors() > errors

        await wait_for(failing, "uploads failing while S3 is down")
        moto.start()

        async def during_done() -> bool:
            return len(await positions()) >= len(during)

        await wait_for(during_done, "the records produced during the outage archived")

    found = Counter(snapshot + await positions())
    assert set(found) == before | during
    assert [position for position, n in found.items() if n > 1] == []


async def test_s3_frozen_mid_upload_then_thawed_archives_every_record_exactly_once(
    kafka_settings: Settings, moto: MotoServer
) -> None:
    settings = outage_settings(kafka_settings, moto.endpoint)
    store = store_for(settings)
    positions = archived_positions(store)
    first = await produce(settings, 12, "first")

    async with running_archiver(settings, store):

        async def some_archived() -> bool:
            return len(await positions()) > 0

        await wait_for(some_archived, "a first upload")
        moto.freeze()
        errors = upload_errors()
        second = await produce(settings, 20, "second")

        async def failing() -> bool:
            return upload_errors() > errors

        await wait_for(failing, "uploads timing out while S3 is frozen")
        moto.thaw()
        expected = first | second

        async def all_done() -> bool:
            return len(await positions()) >= len(expected) and await committed_total(settings) >= len(expected)

        await wait_for(all_done, "everything archived and committed")

    found = Counter(await positions())
    assert set(found) == expected
    assert [position for position, n in found.items() if n > 1] == []
