"""S3 unavailable for a while under steady load: the archiver catches up and archives every inbox record
exactly once; the pipeline itself does not notice (the closing check holds); a replay read back from the
archive adds no status event.

S3 is a PRIVATE moto server (deploy/local/stack.py ``start_moto`` on a free port and folder), frozen with
SIGSTOP for the outage: uploads in flight time out on our side and may still land when it thaws.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fault_harness import (
    PrivateS3,
    StatusFollower,
    StripeLifecycles,
    closing_check,
    drive,
    start_ingest_for,
    warm_up,
    worker_alive,
)
from http_harness import HarnessPki, counter_value, free_port
from processor_harness import processor_settings, start_worker
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer
from processors.recovery.archive import FlushPolicy, run_archiver
from processors.recovery.archive_format import decode_object
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.group_lag import wait_drained
from processors.recovery.replay import ReplayOptions, replay

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.s3]

RATE = 50.0
DURATION_S = 20.0
FREEZE_AFTER_S = 5.0
OUTAGE_S = 8.0
POLICY = FlushPolicy(max_records=100, max_age_s=0.5, retry_initial_s=0.2, retry_max_s=1.0, poll_timeout_ms=200)


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = make_consumer(settings, group_id=None, client_suffix="reliability-ends")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topics.inbox, p) for p in range(settings.topics.partitions)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def archiver_committed(settings: Settings) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{settings.kafka.client_id}-archiver")
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topics.inbox}
    finally:
        await admin.close()


def archived_inbox_positions(store: ArchiveStore, topic: str) -> Counter[tuple[int, int]]:
    found: Counter[tuple[int, int]] = Counter()
    for stored in store.list(store.prefix + "/"):
        for record in decode_object(store.get(stored.key)):
            if record.topic == topic:
                found[(record.partition, record.offset)] += 1
    return found


async def test_s3_unavailable_under_load_archives_every_record_exactly_once(
    base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki, tmp_path: Path
) -> None:
    s3 = PrivateS3(f"http://127.0.0.1:{free_port()}", tmp_path / "private-moto")
    await s3.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(s3.stop)
        base = base_settings.model_copy(update={
            "s3": base_settings.s3.model_copy(update={"endpoint_url": s3.endpoint, "bucket": s3.bucket}),
            "kafka": base_settings.kafka.model_copy(update={"client_id": f"rel-{uuid.uuid4().hex[:8]}"}),
        })
        settings = await fresh_topic_settings(base, partitions=3)
        store = ArchiveStore(settings.s3, connect_timeout_s=1, read_timeout_s=1, aws_access_key_id="test",
                             aws_secret_access_key="test")
        conf = processor_settings()
        started_at = datetime.now(UTC) - timedelta(seconds=5)
        running = await start_ingest_for(stack, settings, rel_pki, tmp_path)
        worker = start_worker(settings, conf, tmp_path, "worker")
        stack.callback(worker.stop)
        stop_archiver = asyncio.Event()
        archiver = asyncio.create_task(run_archiver(settings, stop_archiver, policy=POLICY, store=store))
        follower = await stack.enter_async_context(StatusFollower(settings))
        payments = StripeLifecycles(uuid.uuid4().hex[:6])
        await warm_up(running, payments, follower, worker_alive(worker))

        load = asyncio.create_task(drive(running, payments, name="S3 outage", rate=RATE, duration_s=DURATION_S))
        await asyncio.sleep(FREEZE_AFTER_S)
        upload_errors = counter_value("paystream_archive_uploads_total", outcome="error")
        s3.freeze()
        TALLY["faults injected"] += 1
        await asyncio.sleep(OUTAGE_S)
        assert counter_value("paystream_archive_uploads_total", outcome="error") > upload_errors, "S3 never failed"
        s3.thaw()
        stats = await load
        missing = await follower.wait_reflected(stats.acked, alive=worker_alive(worker))
        lag = await wait_drained(settings, conf.app_id, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + worker.log_tail()

        ends = await end_offsets(settings)
        deadline = time.monotonic() + 90
        while await archiver_committed(settings) != ends and time.monotonic() < deadline and not archiver.done():
            await asyncio.sleep(0.5)
        stop_archiver.set()
        await asyncio.wait_for(archiver, 60)
        archived = await asyncio.to_thread(archived_inbox_positions, store, settings.topics.inbox)

        before_replay = len({event["id"] for event in follower.events})
        replayed = await replay(settings, ReplayOptions(source="s3", since=started_at, progress=False), store=store)
        lag = await wait_drained(settings, conf.app_id, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + worker.log_tail()
        await asyncio.sleep(1.0)
        events = list(follower.events)

    expected = {(partition, offset) for partition, end in ends.items() for offset in range(end)}
    assert set(archived) == expected, f"{len(expected - set(archived))} inbox records never archived"
    assert [position for position, count in archived.items() if count > 1] == []
    assert replayed.selected == sum(ends.values())
    assert len({event["id"] for event in events}) == before_replay, "the replay from S3 emitted new events"
    TALLY["records archived exactly once"] += len(archived)
    closing_check(stats, events, missing, faults=f"S3 frozen {OUTAGE_S:.0f} s, archive + replay from S3")
