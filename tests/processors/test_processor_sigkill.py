"""The processor SIGKILLed mid-stream, twice, on the real broker: exactly-once for read_committed consumers.

Three workers of one app run one after the other; each of the first two is killed (SIGKILL: no commit, no
leave, its open transaction left to be aborted) while a stream of inputs is still flowing to it:

1. inbox: the deliveries of 60 Adyen payments (authorise, capture, refund part: three real transitions each;
   a payment's deliveries share one inbox partition, so its exact event sequence is known whatever a restart
   replays) and 40 pending Stripe payments (a pollable provider: each arms its first stale poll, a fetch
   request due ten minutes after the push's receipt). Worker 1 is killed once 30 events are committed.
2. fetch results: every armed poll "fires" and fails (every failure outcome: any outcome arms the next
   poll), each result published twice (a fetcher may publish again after its own crash). Worker 2, which
   finished step 1, is killed once 3 second polls are committed.

Then: every (payment, sequence) exactly once, with the expected content; every poll of the chains exactly
once, with the request id the chain determines (``{payment_key}:stale:{last news}:{n}``) and its not-before
in the future; the state topic's latest record per payment is its last event; nothing dead-lettered.

The gaps are long (10 min, 1 h) so every link is due in the future whatever the test's pace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from processor_harness import (
    EXPECTED_LIFECYCLE,
    Worker,
    adyen_lifecycle,
    by_payment,
    drop_topics,
    events_of,
    fresh_settings,
    processor_settings,
    read_all,
    read_until,
    start_worker,
    stripe_pending_push,
    summary,
    trickle,
    wait_drained,
    wait_member,
)

from paystream.config import Settings
from processors.settings import ProcessorSettings
from schemas.envelopes import FetchRequest, FetchResult, from_rfc3339, to_rfc3339

pytestmark = pytest.mark.kafka

GAPS_S = [600, 3600]
ADYEN_PAYMENTS, STRIPE_PAYMENTS = 60, 40
FAILURES = ("server_error", "timeout", "rate_limited", "not_found", "circuit_open")


def failed_poll(request: FetchRequest, outcome: str) -> FetchResult:
    return FetchResult(payment_key=request.payment_key, provider=request.provider, account=request.account,
                       object_type=request.object_type, object_id=request.object_id,
                       fetch_id=f"{request.request_id}:fetch", request_id=request.request_id, reason="stale",
                       fetched_at=to_rfc3339(datetime.now(UTC)), outcome=outcome,  # type: ignore[arg-type]
                       http_status=None, attempt=request.attempt)


def chains(records: list[Any]) -> dict[str, list[FetchRequest]]:
    by_key: dict[str, list[FetchRequest]] = {}
    for record in records:
        request = FetchRequest.from_bytes(record.value)
        by_key.setdefault(request.payment_key, []).append(request)
    return by_key


def pairs_of(records: list[Any]) -> list[tuple[str, int]]:
    return [(e["subject"], e["data"]["sequence"]) for e in events_of(records)]


def duplicated(items: list[Any]) -> list[Any]:
    return sorted({item for item in items if items.count(item) > 1})


async def kill_mid_stream(settings: Settings, conf: ProcessorSettings, worker: Worker, topic: str,
                          records: list[tuple[bytes, bytes]], watched: str,
                          killed_at: Callable[[list[Any]], bool]) -> tuple[int, asyncio.Task[None]]:
    """Once ``worker`` processes, trickle ``records`` into ``topic`` and SIGKILL the worker as soon as
    ``killed_at`` holds for the committed records of ``watched``. The stream keeps flowing (the returned
    task) while the worker is dead and its successor starts. Returns how many records were committed."""
    await wait_member(settings, conf.app_id)
    flowing = asyncio.create_task(trickle(settings, topic, records, batch=4, pause_s=0.05))
    try:
        found = await read_until(settings, watched, killed_at, worker=worker, timeout_s=60)
    finally:
        worker.kill()
    assert killed_at(found), worker.log_tail()
    return len(found), flowing


async def test_sigkill_mid_stream_loses_and_duplicates_no_event_and_no_poll(
    base_settings: Settings, kafka_bootstrap: str, tmp_path: Path,
) -> None:
    settings = await fresh_settings(base_settings)
    topics = settings.topics
    conf = processor_settings(poll_schedule_s=GAPS_S)
    run = uuid.uuid4().hex[:8]
    lifecycles = [adyen_lifecycle(f"K{run}{n:02d}", topics.partitions) for n in range(ADYEN_PAYMENTS)]
    pushes = {f"stripe:main:payment_intent:pi_{run}_{n:02d}": stripe_pending_push(f"pi_{run}_{n:02d}",
                                                                                 int(time.time()))
              for n in range(STRIPE_PAYMENTS)}
    since = {key: from_rfc3339(push.received_at) for key, push in pushes.items()}  # the news: each push's receipt
    deliveries = [lifecycle[step] for step in range(3) for lifecycle in lifecycles]  # interleaved, order kept
    for n, push in enumerate(pushes.values()):
        deliveries.insert(n * 4, push)
    expected = {(f"adyen:main:payment:K{run}{n:02d}", seq) for n in range(ADYEN_PAYMENTS) for seq in (1, 2, 3)}
    expected |= {(key, 1) for key in pushes}

    def covered(records: list[Any]) -> bool:
        return set(pairs_of(records)) >= expected

    def polls_at(step: int) -> Callable[[list[Any]], bool]:
        return lambda records: all(any(r.attempt == step for r in chains(records).get(key, [])) for key in pushes)

    # 1. the inbox stream; worker 1 killed mid-way.
    first = start_worker(settings, conf, tmp_path, "first")
    try:
        at_first_kill, flowing = await kill_mid_stream(
            settings, conf, first, topics.inbox, [(d.key, d.to_bytes()) for d in deliveries], topics.status,
            lambda records: len(records) >= 30)
    finally:
        first.kill()
    second = start_worker(settings, conf, tmp_path, "second")
    try:
        await flowing
        await read_until(settings, topics.status, covered, worker=second, timeout_s=120)
        await read_until(settings, topics.fetch_requests, polls_at(1), worker=second, timeout_s=60)
        lag = await wait_drained(settings, conf, [topics.inbox, conf.inputs_topic()], timeout_s=60)
        assert not lag, lag + "\n" + second.log_tail()
        step_one = chains(await read_all(settings, topics.fetch_requests))
        events_one = await read_all(settings, topics.status)
        assert not duplicated(pairs_of(events_one)), duplicated(pairs_of(events_one))[:5]
        assert set(step_one) == set(pushes)  # Adyen is not pollable: no poll for its payments
        for key, requests in step_one.items():
            assert [(r.reason, r.attempt, r.request_id) for r in requests] == [
                ("stale", 1, f"{key}:stale:{since[key].timestamp():.6f}:1")], key
            assert requests[0].not_before == to_rfc3339(since[key] + timedelta(seconds=GAPS_S[0]))
            assert from_rfc3339(requests[0].not_before) > from_rfc3339(requests[0].requested_at)

        # 2. the polls' results; worker 2 killed mid-way.
        results = [failed_poll(requests[0], FAILURES[n % len(FAILURES)]) for n, requests in enumerate(
            step_one.values())]
        at_second_kill, flowing = await kill_mid_stream(
            settings, conf, second, topics.fetch_results,
            [(result.key, result.to_bytes()) for result in results for _ in range(2)], topics.fetch_requests,
            lambda records: len(records) >= STRIPE_PAYMENTS + 3)
    finally:
        second.kill()
    third = start_worker(settings, conf, tmp_path, "third")
    try:
        await flowing
        await read_until(settings, topics.fetch_requests, polls_at(2), worker=third, timeout_s=120)
        await wait_member(settings, conf.app_id)  # past its start-up, whatever was left for it to do
        lag = await wait_drained(settings, conf, [topics.inbox, topics.fetch_results, conf.inputs_topic()],
                                 timeout_s=60)
        records = await read_all(settings, topics.status)
        state = await read_all(settings, topics.state)
        polls = chains(await read_all(settings, topics.fetch_requests))
        dead = await read_all(settings, topics.dlq)
    finally:
        code = third.stop()
        await drop_topics(settings, conf.app_id)
    print(f"committed at the kills: {at_first_kill} status events, {at_second_kill} fetch requests")
    assert code == 0, third.log_tail()
    assert not lag, lag + "\n" + third.log_tail()

    pairs = pairs_of(records)
    assert not duplicated(pairs), f"{len(duplicated(pairs))} duplicated (payment, sequence): {duplicated(pairs)[:5]}"
    assert set(pairs) == expected, sorted(expected - set(pairs))[:5]
    events = events_of(records)
    assert len({e["id"] for e in events}) == len(events)
    for key, group in by_payment(events).items():
        if key.startswith("adyen:"):
            assert [summary(e) for e in group] == EXPECTED_LIFECYCLE, key
        else:
            assert [summary(e) for e in group] == [("pending", 1500, 0, 0)], key
    latest = {r.key: orjson.loads(r.value)["event"] for r in state}  # offset order: the last record per key wins
    final = {key: max(seq for k, seq in expected if k == key) for key, _ in expected}
    last_events = {r.key: orjson.loads(r.value) for r, e in zip(records, events, strict=True)
                   if e["data"]["sequence"] == final[e["subject"]]}
    assert latest == last_events

    assert set(polls) == set(pushes)
    for key, requests in polls.items():
        assert [(r.attempt, r.request_id) for r in requests] == [
            (1, f"{key}:stale:{since[key].timestamp():.6f}:1"),
            (2, f"{key}:stale:{since[key].timestamp():.6f}:2"),
        ], key
        assert requests[1].not_before == to_rfc3339(since[key] + timedelta(seconds=sum(GAPS_S)))
        assert from_rfc3339(requests[1].not_before) > from_rfc3339(requests[1].requested_at)
    assert not dead, [dict(record.headers) for record in dead]
