"""Issue 18 on a real broker: the stream never contradicts itself, a storm of events on one payment never stalls
the others, and a restarted worker does not leave read_committed consumers waiting for its predecessor's
transaction.

* **No illegal move, through the whole pipeline** (ingest over HTTP, the processor): a checkout's sync report
  ``succeeded`` (provider time t=10), an older push ``payment_intent.payment_failed`` (t=5), then the push
  ``payment_intent.succeeded`` (t=10). The stream used to say captured, failed, captured (10 out of 10 runs).
* **A storm on one payment**: 10,000 distinct observations of one payment while 60 other payments keep
  arriving on the same partitions: every other payment's status arrives, nothing is dead-lettered, the storm
  payment's record in the changelog stays bounded.
* **Stable transactional ids**: a worker SIGKILLed in the middle of a transaction and restarted at once under
  the same worker id fences its predecessor and aborts the open transaction: a read_committed consumer of the
  status topic sees events again long before the transaction timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from e2e_pipeline import Pipeline, demo_traffic, running_pipeline
from processor_harness import (
    adyen_item,
    drop_topics,
    envelope,
    fresh_settings,
    processor_settings,
    produce,
    read_all,
    start_worker,
    wait_member,
)

from paystream.config import Settings
from paystream.kafka import make_consumer
from processors.internal_topics import changelog_topic
from processors.topology import stream_id
from schemas.status import Source
from schemas.transitions import TABLE, parse_status

pytestmark = pytest.mark.kafka


def legal_path(events: list[dict[str, Any]]) -> bool:
    for event in events[1:]:
        data = event["data"]
        move = (parse_status(data["previous_status"]), parse_status(data["status"]), Source(data["source"]))
        if not TABLE.allows_emitted(*move):
            return False
    return True


async def test_a_late_older_failure_never_shows_as_captured_then_failed(base_settings: Settings,
                                                                       kafka_bootstrap: str, tmp_path: Path) -> None:
    runs = 5
    async with running_pipeline(base_settings, tmp_path) as pipe:
        keys = [await _captured_then_older_failure(pipe, uuid.uuid4().hex[:8]) for _ in range(runs)]
        for key in keys:
            await pipe.wait_events(key, 1)
        await pipe.settle()
        paths = {key: [(event["data"]["status"], event["data"]["captured_amount"]) for event in pipe.events_for(key)]
                 for key in keys}
        # The sync report, then the push that names the captured money: never `failed` in between.
        assert paths == {key: [("captured", 0), ("captured", 2500)] for key in keys}, paths
        assert all(legal_path(pipe.events_for(key)) for key in keys)


async def _captured_then_older_failure(pipe: Pipeline, run: str) -> str:
    material, now = pipe.material, time.time()
    pi, t5, t10 = f"pi_inv_{run}", int(now) - 55, int(now) - 50
    request = {"provider": "stripe", "account": "main", "object_type": "payment_intent", "object_id": pi,
               "order_ref": f"order-{run}", "request_id": f"checkout-{run}",
               "state": {"provider_status": "succeeded", "amount": 2500, "currency": "EUR",
                         "occurred_at": demo_traffic.iso(t10)}}
    await pipe.post(demo_traffic.observation(material, request, "checkout: succeeded"))
    key = f"stripe:main:payment_intent:{pi}"
    await pipe.wait_events(key, 1)
    declined = {"code": "card_declined", "decline_code": "insufficient_funds"}
    failed = demo_traffic.stripe_intent(pi, "requires_payment_method", 2500, t5, last_payment_error=declined)
    await pipe.post(demo_traffic.stripe_push(material, demo_traffic.stripe_event(
        "payment_intent.payment_failed", failed, t5), time.time()))
    succeeded = demo_traffic.stripe_intent(pi, "succeeded", 2500, t5, amount_received=2500)
    await pipe.post(demo_traffic.stripe_push(material, demo_traffic.stripe_event(
        "payment_intent.succeeded", succeeded, t10), time.time()))
    return key


STORM = 10_000
OTHERS = 60


async def test_a_storm_of_distinct_events_on_one_payment_leaves_every_other_payment_flowing(
        base_settings: Settings, kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = await fresh_settings(base_settings, partitions=3, tag="st")
    conf = processor_settings()
    storm_psp, run = f"STORM{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    # Distinct observations: the authorised amount adjusted again and again (provider time one second apart).
    storm = [(f"adyen:main:storm-{run}-{n}".encode(), envelope("adyen", "main", f"storm-{run}-{n}", orjson.dumps({
        **orjson.loads(adyen_item(storm_psp, "AUTHORISATION_ADJUSTMENT", 1000 + n)),
        "eventDate": f"2024-05-01T{10 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}+00:00"})).to_bytes())
             for n in range(STORM)]
    others = [envelope("adyen", "main", f"other-{run}-{n}", adyen_item(f"O{run}{n}", "AUTHORISATION", 500 + n))
              for n in range(OTHERS)]
    worker = start_worker(settings, conf, tmp_path)
    try:
        await wait_member(settings, conf.app_id, timeout_s=90)
        started = time.monotonic()
        # The storm first, the other payments interleaved behind it: they must not wait for it to settle.
        await produce(settings, settings.topics.inbox, storm[:STORM // 2])
        await produce(settings, settings.topics.inbox, [(env.key, env.to_bytes()) for env in others])
        await produce(settings, settings.topics.inbox, storm[STORM // 2:])
        wanted = {f"adyen:main:payment:O{run}{n}" for n in range(OTHERS)}
        storm_key = f"adyen:main:payment:{storm_psp}"
        deadline = time.monotonic() + 600
        while True:
            events = [orjson.loads(r.value) for r in await read_all(settings, settings.topics.status)]
            seen = {event["subject"] for event in events}
            storm_amounts = [event["data"]["amount"] for event in events if event["subject"] == storm_key]
            if wanted <= seen and storm_amounts and storm_amounts[-1] == 1000 + STORM - 1:
                break
            assert time.monotonic() < deadline and worker.process.poll() is None, (
                f"{len(wanted - seen)} other payments without status; storm at {storm_amounts[-1:]}\n"
                + worker.log_tail())
            await asyncio.sleep(2)
        elapsed = time.monotonic() - started
        dead = await read_all(settings, settings.topics.dlq)
        changelog = [r for r in await read_all(settings, changelog_topic(conf.app_id, stream_id(settings, conf)))
                     if r.key is not None and r.key.startswith(storm_key.encode())]
    finally:
        code = worker.stop()
        await drop_topics(settings, conf.app_id)
    largest = max(len(r.value or b"") for r in changelog)
    print(f"storm: {STORM} distinct observations on one payment and {OTHERS} other payments in {elapsed:.1f}s; "
          f"largest stored record {largest} bytes over {len(changelog)} changelog writes")
    assert code == 0
    assert not dead, [dict(r.headers) for r in dead[:3]]
    assert largest < 64 * 1024  # bounded: 32 live groups and a summary, however long the storm


async def test_a_restarted_worker_fences_its_predecessor_and_consumers_do_not_wait_for_the_timeout(
        base_settings: Settings, kafka_bootstrap: str, tmp_path: Path) -> None:
    # A transaction timeout long enough that waiting for it could not be mistaken for the fencing.
    timeout_s = 60.0
    settings = await fresh_settings(base_settings, partitions=3, tag="tx")
    conf = processor_settings(worker_id="slot-0", transaction_timeout_s=timeout_s)
    arrivals: list[float] = []
    stop = asyncio.Event()

    async def follow() -> None:
        consumer = make_consumer(settings, group_id=None, client_suffix="test-rc")  # read_committed
        await consumer.start()
        try:
            parts = [TopicPartition(settings.topics.status, p) for p in range(settings.topics.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                arrivals.extend(time.monotonic() for records in batch.values() for _ in records)
        finally:
            await consumer.stop()

    async def trickle() -> None:
        n = 0
        while not stop.is_set():  # 20 payments a second, each with one status event
            env = envelope("adyen", "main", f"tx-{n}", adyen_item(f"TX{n}", "AUTHORISATION", 100))
            await produce(settings, settings.topics.inbox, [(env.key, env.to_bytes())])
            n += 1
            await asyncio.sleep(0.05)

    first = start_worker(settings, conf, tmp_path, "first")
    follower = asyncio.create_task(follow())
    producer = asyncio.create_task(trickle())
    try:
        await wait_member(settings, conf.app_id, timeout_s=90)
        await asyncio.sleep(5)
        first.kill()  # SIGKILL: mid-checkpoint, with an open transaction
        killed = time.monotonic()
        second = start_worker(settings, conf, tmp_path, "second")  # the same worker id
        try:
            deadline = time.monotonic() + 3 * timeout_s
            while not [t for t in arrivals if t > killed] and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
        finally:
            assert second.stop() == 0, second.log_tail()
    finally:
        stop.set()
        await asyncio.gather(follower, producer)
        await drop_topics(settings, conf.app_id)
    after = [t for t in arrivals if t > killed]
    assert after, "no status event after the restart"
    stall = after[0] - killed
    print(f"read_committed stall after SIGKILL and restart under the same worker id: {stall:.1f}s "
          f"(transaction timeout {timeout_s:.0f}s)")
    # Waiting for the timeout would take at least timeout_s: the predecessor's transaction was aborted by the
    # successor's fencing, as soon as it started (a worker start takes seconds).
    assert stall < timeout_s * 0.75
