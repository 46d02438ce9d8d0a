"""A broker outage seen through HTTP, on a PRIVATE broker this test starts and stops (never the shared one).

Deliveries flow; the broker stops → 503 with Retry-After and /readyz 503; we wait longer than the send
timeout; the broker starts again → deliveries flow again. At the end the whole topic is read: what was
answered 503 never appears later (the provider retries it, nothing is published behind its back).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from http_harness import ACCOUNT, Deliveries, RunningIngest, StartIngest, read_inbox
from private_stack import PrivateBroker, free_port_pair

from paystream.config import Settings
from paystream.kafka import ensure_topics

pytestmark = pytest.mark.kafka

SEND_TIMEOUT_S = 2.0
STRIPE = f"/webhooks/stripe/{ACCOUNT}"


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(f"127.0.0.1:{free_port_pair()}", tmp_path / "private-kafka")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def _post_until_accepted(running: RunningIngest, body: bytes, headers: dict[str, str], attempts: int = 30) -> int:
    """Like a provider retrying: the same delivery until 2xx (bounded)."""
    status = 0
    for _ in range(attempts):
        status = (await running.post(STRIPE, body, headers)).status
        if status == 200:
            return status
        await asyncio.sleep(1.0)
    return status


async def test_broker_outage_answers_503_and_publishes_nothing_later_by_surprise(
    private_broker: PrivateBroker, base_settings: Settings, start_ingest: StartIngest, deliveries: Deliveries
) -> None:
    settings = base_settings.model_copy(update={
        "kafka": base_settings.kafka.model_copy(update={"bootstrap": private_broker.bootstrap,
                                                        "send_timeout_s": SEND_TIMEOUT_S}),
        "topics": base_settings.topics.model_copy(update={"partitions": 1}),
    })
    await ensure_topics(settings)
    running = await start_ingest(settings)
    await running.wait_ready()

    def event_id(body: bytes) -> str:
        return str(orjson.loads(body)["id"])

    before, before_headers = deliveries.stripe()
    assert (await running.post(STRIPE, before, before_headers)).status == 200

    await private_broker.stop()
    refused = [deliveries.stripe() for _ in range(3)]
    replies = [await running.post(STRIPE, body, headers) for body, headers in refused]
    assert [reply.status for reply in replies] == [503, 503, 503]
    assert all(reply.json()["error"] == "kafka_unavailable" for reply in replies)
    assert all(reply.headers["retry-after"] == str(settings.http.retry_after_s) for reply in replies)
    assert (await running.get("/readyz")).status == 503

    await asyncio.sleep(SEND_TIMEOUT_S * 2)  # anything still queued in the producer must expire now
    await private_broker.start()
    await running.wait_ready(timeout_s=90)
    after, after_headers = deliveries.stripe()
    assert await _post_until_accepted(running, after, after_headers) == 200
    assert (await running.get("/readyz")).status == 200

    # Read everything the broker holds (a moment's grace for anything "late" to land first).
    await asyncio.sleep(SEND_TIMEOUT_S)
    delivered = {envelope.delivery_id for _, envelope in await read_inbox(settings, timeout_s=60)}
    assert event_id(before) in delivered
    assert event_id(after) in delivered
    assert not delivered & {event_id(body) for body, _ in refused}, "a delivery answered 503 was published later"
    assert delivered == {event_id(before), event_id(after)}
