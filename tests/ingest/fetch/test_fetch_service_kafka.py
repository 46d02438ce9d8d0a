"""The fetcher end to end through the real broker: requests in, results out, sweeps with a durable cursor."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from fetch_helpers import FetcherUnderTest, ResultReader, eventually, fetch_request, read_records
from provider_double.server import Answer, ProviderDouble

from ingest.fetch.options import FetchOptions
from paystream.config import Settings
from paystream.dlq import ERROR_CLASS, ERROR_REASON, FIRST_FAILURE_AT, SOURCE_TOPIC
from paystream.kafka import make_consumer, make_producer
from schemas.envelopes import FetchRequest, FetchResult, from_rfc3339

pytestmark = pytest.mark.kafka


def options(**overrides: object) -> FetchOptions:
    base: dict[str, object] = {
        "group_id": f"fetch-test-{uuid.uuid4().hex[:8]}",
        "stripe_sweeps": (),
        "commit_interval_s": 0.2,
        "backoff_base_s": 0.2,
        "sweep_interval_s": 0.2,
        "shutdown_grace_s": 5.0,
    }
    return FetchOptions(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def fetcher(
    kafka_settings: Settings, settings_with: Callable[..., Settings]
) -> AsyncIterator[Callable[..., FetcherUnderTest]]:
    made: list[FetcherUnderTest] = []

    def make(**overrides: object) -> FetcherUnderTest:
        under_test = FetcherUnderTest(settings_with(kafka_settings), options(**overrides))
        made.append(under_test)
        return under_test

    yield make
    for under_test in made:
        await under_test.shutdown()


async def publish(settings: Settings, *requests: FetchRequest) -> None:
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        for req in requests:
            await producer.send_and_wait(settings.topics.fetch_requests, key=req.key, value=req.to_bytes())
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str) -> list[bytes]:
    """Every record value on ``topic`` now (from the beginning to the current end)."""
    return [record.value for record in await read_records(settings, topic) if record.value is not None]


def stripe_request(object_id: str, *, delay_s: float = 0.0) -> FetchRequest:
    return fetch_request("stripe", "main", "payment_intent", object_id, request_id=f"evt_{object_id}:fetch",
                         delay_s=delay_s)


async def committed_offsets(settings: Settings, group_id: str) -> int:
    consumer = make_consumer(settings, group_id=group_id, client_suffix="test-offsets")
    await consumer.start()
    try:
        topic = settings.topics.fetch_requests
        total = 0
        for partition in range(settings.topics.partitions):
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def test_request_in_result_out_after_not_before(
    double: ProviderDouble, kafka_settings: Settings, fetcher: Callable[..., FetcherUnderTest]
) -> None:
    double.set_object("stripe", "payment_intent", "pi_late", {"id": "pi_late", "status": "succeeded"})
    under_test = fetcher()
    under_test.start()
    req = stripe_request("pi_late", delay_s=2.0)
    async with ResultReader(kafka_settings) as reader:
        await publish(kafka_settings, req)
        await eventually(lambda: len(reader.results) == 1, within_s=60)
    result = reader.results[0]
    assert result.payment_key == req.payment_key
    assert result.outcome == "ok"
    assert result.request_id == req.request_id
    assert orjson.loads(result.body) == {"id": "pi_late", "status": "succeeded"}
    assert from_rfc3339(result.fetched_at) >= from_rfc3339(req.not_before)
    await under_test.shutdown()
    assert await committed_offsets(kafka_settings, under_test.options.group_id) == 1


async def test_server_error_is_retried_through_the_requests_topic(
    double: ProviderDouble, kafka_settings: Settings, fetcher: Callable[..., FetcherUnderTest]
) -> None:
    double.set_object("stripe", "payment_intent", "pi_flaky", {"id": "pi_flaky", "status": "processing"})
    double.script("stripe", Answer(status=502))
    under_test = fetcher()
    under_test.start()
    async with ResultReader(kafka_settings) as reader:
        await publish(kafka_settings, stripe_request("pi_flaky"))
        await eventually(lambda: len(reader.results) == 1, within_s=60)
    assert reader.results[0].outcome == "ok"
    assert reader.results[0].attempt == 1  # the request's own number: the fetcher counts retries apart
    requests = [
        FetchRequest.from_bytes(v) for v in await read_all(kafka_settings, kafka_settings.topics.fetch_requests)
    ]
    assert [(r.attempt, r.retry) for r in requests] == [(1, None), (1, 1)]


async def test_malformed_request_goes_to_the_dlq(
    kafka_settings: Settings, fetcher: Callable[..., FetcherUnderTest]
) -> None:
    under_test = fetcher()
    under_test.start()
    producer = make_producer(kafka_settings, client_suffix="test")
    await producer.start()
    await producer.send_and_wait(kafka_settings.topics.fetch_requests, key=b"k", value=b"not json")
    await producer.stop()
    dlq: list[Any] = []

    async def poll() -> None:
        dlq[:] = await read_records(kafka_settings, kafka_settings.topics.dlq)

    deadline = time.monotonic() + 60
    while not dlq and time.monotonic() < deadline:
        await poll()
        await asyncio.sleep(0.2)
    assert [(record.key, record.value) for record in dlq] == [(b"k", b"not json")]  # unchanged
    headers = dict(dlq[0].headers)
    # the same error headers the processors write (paystream/dlq.py), so one DLQ reader serves both
    assert headers[ERROR_REASON] == b"malformed_envelope"
    assert headers[ERROR_CLASS] == b"NormalizationError"
    assert headers[SOURCE_TOPIC] == kafka_settings.topics.fetch_requests.encode()
    assert FIRST_FAILURE_AT in headers


def stripe_event(n: int, *, created: int) -> dict[str, object]:
    return {
        "id": f"evt_{n:03d}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": created,
        "data": {"object": {"id": f"pi_{n:03d}", "object": "payment_intent", "status": "succeeded"}},
    }


async def test_sweep_cursor_resumes_after_restart_without_rereading_or_skipping(
    double: ProviderDouble, kafka_settings: Settings, fetcher: Callable[..., FetcherUnderTest]
) -> None:
    now = int(time.time())
    for n in range(1, 6):
        double.add_stripe_event(stripe_event(n, created=now - 100 + n))
    first = fetcher(stripe_sweeps=("events",), sweep_page_limit=2)
    async with ResultReader(kafka_settings) as reader:
        first.start()
        await eventually(lambda: len(reader.results) >= 5, within_s=60)
        await first.shutdown()
        for n in range(6, 9):
            double.add_stripe_event(stripe_event(n, created=now - 100 + n))
        second = fetcher(stripe_sweeps=("events",), sweep_page_limit=2)
        second.start()
        await eventually(lambda: any(r.fetch_id == "evt_008" for r in reader.results), within_s=60)
        await second.shutdown()
    everything = [
        FetchResult.from_bytes(v) for v in await read_all(kafka_settings, kafka_settings.topics.fetch_results)
    ]
    assert sorted(r.fetch_id for r in everything) == [f"evt_{n:03d}" for n in range(1, 9)]
    assert all(r.object_kind == "event" and r.reason == "sweep" for r in everything)
    assert {r.payment_key for r in everything} == {f"stripe:main:payment_intent:pi_{n:03d}" for n in range(1, 9)}


async def test_undelivered_sweep_publishes_only_settled_undelivered_events(
    double: ProviderDouble, kafka_settings: Settings, fetcher: Callable[..., FetcherUnderTest]
) -> None:
    now = int(time.time())
    double.add_stripe_event(stripe_event(1, created=now - 1000), delivered=True)
    double.add_stripe_event(stripe_event(2, created=now - 900), delivered=False)
    double.add_stripe_event(stripe_event(3, created=now - 10), delivered=False)  # may still be delivered
    under_test = fetcher(stripe_sweeps=("undelivered",), undelivered_settle_s=300.0)
    async with ResultReader(kafka_settings) as reader:
        under_test.start()
        await eventually(lambda: len(reader.results) >= 1, within_s=60)
        await under_test.shutdown()
    everything = [
        FetchResult.from_bytes(v) for v in await read_all(kafka_settings, kafka_settings.topics.fetch_results)
    ]
    assert [r.fetch_id for r in everything] == ["evt_002"]
