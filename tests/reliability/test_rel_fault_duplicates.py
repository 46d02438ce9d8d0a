"""A duplicate storm: every delivery three times, a third of the payments out of order, then a replay of
the whole range through processors/recovery/replay.py. One event per real transition, none twice.

The storm is what a provider's retries plus a load balancer's retries look like; the replay is what an
incident responder does after an outage. Neither may add a status event: duplicates are dropped by the
per-payment dedupe (delivery id, 31 days), replayed records (which bypass it on purpose) by the join.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fault_harness import (
    Scripted,
    StatusFollower,
    StripeLifecycles,
    closing_check,
    drive,
    duplicates,
    start_ingest_for,
    summary,
    warm_up,
    worker_alive,
)
from http_harness import HarnessPki
from processor_harness import processor_settings, start_worker
from reliability_harness import TALLY, fresh_topic_settings

from paystream.config import Settings
from processors.recovery.group_lag import wait_drained
from processors.recovery.replay import ReplayOptions, replay

pytestmark = [pytest.mark.reliability, pytest.mark.kafka]

PAYMENTS = 130
COPIES = 3
RATE = 60.0


def storm(tag: str) -> tuple[list[str], Scripted]:
    """Every step of every payment three times; a third of the payments with their steps shuffled."""
    lifecycles = StripeLifecycles(tag)
    rng = random.Random(tag)
    intents = [f"pi_{tag}{n:05d}" for n in range(PAYMENTS)]
    steps = []
    for number, intent in enumerate(intents):
        lifecycle = lifecycles.lifecycle(intent)
        if number % 3 == 0:
            rng.shuffle(lifecycle)
        steps += [step for step in lifecycle for _ in range(COPIES)]
    # Interleave the payments (a storm, not one payment at a time), keeping each payment's own order.
    lanes = [steps[i:i + 3 * COPIES] for i in range(0, len(steps), 3 * COPIES)]
    interleaved = []
    while lanes:
        lane = lanes[rng.randrange(len(lanes))]
        interleaved.append(lane.pop(0))
        if not lane:
            lanes.remove(lane)
    return [f"stripe:main:payment_intent:{intent}" for intent in intents], Scripted(interleaved)


async def test_duplicate_storm_and_replay_emit_each_transition_once(
    base_settings: Settings, kafka_bootstrap: str, rel_pki: HarnessPki, tmp_path: Path
) -> None:
    settings = await fresh_topic_settings(base_settings, partitions=3)
    conf = processor_settings()
    payments, source = storm(uuid.uuid4().hex[:6])
    started_at = datetime.now(UTC) - timedelta(seconds=5)
    async with contextlib.AsyncExitStack() as stack:
        running = await start_ingest_for(stack, settings, rel_pki, tmp_path)
        worker = start_worker(settings, conf, tmp_path, "worker")
        stack.callback(worker.stop)
        follower = await stack.enter_async_context(StatusFollower(settings))
        await warm_up(running, StripeLifecycles("warm"), follower, worker_alive(worker))

        stats = await drive(running, source, name="duplicate storm", rate=RATE, duration_s=len(source) / RATE)
        TALLY["faults injected"] += 1
        missing = await follower.wait_reflected(stats.acked, alive=worker_alive(worker))
        lag = await wait_drained(settings, conf.app_id, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + worker.log_tail()
        before_replay = len({event["id"] for event in follower.events})

        replayed = await replay(settings, ReplayOptions(source="kafka", since=started_at, progress=False))
        TALLY["faults injected"] += 1
        assert replayed.selected == len(stats.acked) + 1  # and the warm-up webhook
        lag = await wait_drained(settings, conf.app_id, [settings.topics.inbox, conf.inputs_topic()])
        assert not lag, lag + worker.log_tail()
        await asyncio.sleep(1.0)
        events = list(follower.events)

    assert len({event["id"] for event in events}) == before_replay, "the replay emitted new events"
    finals: dict[str, tuple[object, ...]] = {}
    for event in sorted(events, key=lambda e: e["data"]["sequence"]):
        finals[event["subject"]] = summary(event)
    assert set(payments) <= set(finals)
    assert {finals[payment] for payment in payments} == {("captured", 2000, 2000, 0)}
    assert not duplicates(events)
    closing_check(stats, events, missing, faults=f"every delivery x{COPIES}, 1/3 out of order, replay of "
                  f"{replayed.selected} records", injected=2)
