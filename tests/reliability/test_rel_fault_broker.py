"""The Kafka broker stopped for 20 s under steady load, then restarted: ingest answers 503 meanwhile
(providers retry), nothing acknowledged is lost, no transition is emitted twice.

Everything runs on a PRIVATE broker this test starts and stops (its own ports and folder), never on the
shared one. The processor worker stays up through the outage and must carry on by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
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
from private_stack import PrivateBroker, free_port_pair
from processor_harness import processor_settings, start_worker, wait_drained
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

RATE = 50.0
DURATION_S = 35.0
STOP_AFTER_S = 6.0
OUTAGE_S = 20.0


async def test_broker_stopped_for_20s_under_load_loses_nothing_acknowledged(
    base_settings: Settings, rel_pki: HarnessPki, tmp_path: Path
) -> None:
    broker = PrivateBroker(f"127.0.0.1:{free_port_pair()}", tmp_path / "private-kafka")
    await broker.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(broker.stop)
        kafka = base_settings.kafka.model_copy(update={"bootstrap": broker.bootstrap, "send_timeout_s": 2.0})
        settings = await fresh_topic_settings(base_settings.model_copy(update={"kafka": kafka}), partitions=3)
        conf = processor_settings()
        running = await start_ingest_for(stack, settings, rel_pki, tmp_path)
        worker = start_worker(settings, conf, tmp_path, "worker")
        stack.callback(worker.stop)
        follower = await stack.enter_async_context(StatusFollower(settings))
        payments = StripeLifecycles(uuid.uuid4().hex[:6])
        await warm_up(running, payments, follower, worker_alive(worker))

        load = asyncio.create_task(drive(running, payments, name="broker outage", rate=RATE, duration_s=DURATION_S))
        await asyncio.sleep(STOP_AFTER_S)
        await broker.stop()
        TALLY["faults injected"] += 1
        await asyncio.sleep(2.0)
        assert (await running.get("/readyz")).status == 503
        await asyncio.sleep(OUTAGE_S - 2.0)
        await broker.start()
        stats = await load

        assert stats.statuses[503] > 0, "ingest never answered 503 while the broker was down"
        missing = await follower.wait_reflected(stats.acked, alive=worker_alive(worker))
        lag = await wait_drained(settings, conf, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + worker.log_tail()
        await asyncio.sleep(1.0)
        closing_check(stats, follower.events, missing, faults="broker stopped 20 s and restarted")
