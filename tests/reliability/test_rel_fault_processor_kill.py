"""A processor worker SIGKILLed under steady load and restarted: nothing lost, nothing twice.

The worker dies mid-checkpoint: inputs and status events produced inside an open Kafka transaction, state
changelog written, input offsets not committed. The restarted worker waits for the dead member's session to
expire; its transactional producer fences the dead one, whose open transaction is aborted; it restores the
reconcile state from the changelog and re-processes everything after the last committed offsets.

Strict, because the processor runs exactly-once: a ``read_committed`` consumer of payments.status.v1 sees no
acknowledged webhook missing and every (payment, sequence) exactly ONCE — not even the same event re-emitted
with the same id, which at-least-once would allow (the closing check tolerates that; this test does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from fault_harness import (
    StatusFollower,
    StripeLifecycles,
    closing_check,
    drive,
    start_ingest_for,
    warm_up,
    worker_alive,
)
from http_harness import HarnessPki
from processor_harness import processor_settings, start_worker
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings
from paystream.kafka import make_consumer
from processors.recovery.group_lag import wait_drained

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

RATE = 50.0
DURATION_S = 20.0
KILL_AFTER_S = 7.0


async def status_records_uncommitted(settings: Settings) -> int:
    """Every data record on the status topic as a ``read_uncommitted`` consumer sees it: the committed events
    plus whatever the killed worker wrote inside its open transaction (aborted when the restarted worker's
    producer fenced it). The difference shows the kill really hit a checkpoint in flight."""
    consumer = make_consumer(settings, group_id=None, client_suffix="reliability-uncommitted",
                             isolation_level="read_uncommitted")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topics.status, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        count, open_partitions = 0, {tp for tp in partitions if ends[tp]}
        while open_partitions:
            for records in (await consumer.getmany(*open_partitions, timeout_ms=500)).values():
                count += len(records)
            open_partitions = {tp for tp in open_partitions if await consumer.position(tp) < ends[tp]}
        return count
    finally:
        await consumer.stop()


async def test_processor_worker_sigkilled_under_load_loses_and_repeats_nothing(
    base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki, tmp_path: Path
) -> None:
    settings = await fresh_topic_settings(base_settings, partitions=3)
    conf = processor_settings()
    async with contextlib.AsyncExitStack() as stack:
        running = await start_ingest_for(stack, settings, rel_pki, tmp_path)
        first = start_worker(settings, conf, tmp_path, "first")
        stack.callback(first.stop)
        follower = await stack.enter_async_context(StatusFollower(settings))
        payments = StripeLifecycles(uuid.uuid4().hex[:6])
        await warm_up(running, payments, follower, worker_alive(first))

        load = asyncio.create_task(drive(running, payments, name="processor kill", rate=RATE, duration_s=DURATION_S))
        await asyncio.sleep(KILL_AFTER_S)
        first.kill()
        TALLY["faults injected"] += 1
        restarted = start_worker(settings, conf, tmp_path, "restarted")
        stack.callback(restarted.stop)
        stats = await load

        missing = await follower.wait_reflected(stats.acked, alive=worker_alive(restarted))
        lag = await wait_drained(settings, conf.app_id, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + restarted.log_tail()
        await asyncio.sleep(1.0)  # anything re-emitted after the drain would show now
        events = list(follower.events)
        aborted = await status_records_uncommitted(settings) - len(events)
        TALLY["status events aborted with the killed worker's transaction"] += aborted
        closing_check(stats, events, missing, faults=f"processor worker SIGKILL + restart ({aborted} status "
                      "events of its open transaction aborted)")
    slots = Counter((event["subject"], event["data"]["sequence"]) for event in events)
    twice = {slot: n for slot, n in slots.items() if n > 1}
    assert not twice, f"{len(twice)} (payment, sequence) seen more than once by a read_committed consumer: " \
                      f"{list(twice.items())[:5]}"
    assert first.process.returncode == -9  # it really was killed, not stopped
