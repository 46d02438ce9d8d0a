"""A processor worker SIGKILLed under steady load and restarted: nothing lost, no transition twice.

The worker dies with batches in flight (observations produced, table changelog written or not, offsets
not committed). The restarted worker waits for the dead member's session to expire, rebuilds its tables
from the changelogs and re-processes everything after the last committed offsets.
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
from processor_harness import processor_settings, start_worker, wait_drained
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

RATE = 50.0
DURATION_S = 20.0
KILL_AFTER_S = 7.0


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
        lag = await wait_drained(settings, conf, [settings.topics.inbox, conf.observations_topic()])
        assert not lag, lag + restarted.log_tail()
        await asyncio.sleep(1.0)  # anything re-emitted after the drain would show now
        closing_check(stats, follower.events, missing, faults="processor worker SIGKILL + restart")
