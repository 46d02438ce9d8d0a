"""The Stripe Events sweep through the real broker against the provider double's Events list (which filters on
``types[]`` as Stripe does and refuses more than 20): only the types the catalog maps are published, each
event once, and each chunk of types keeps its own cursor on the cursor topic and resumes from it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from fetch_helpers import FetcherUnderTest, ResultReader, eventually, read_records
from provider_double.server import ProviderDouble

from ingest.fetch.options import FetchOptions
from ingest.fetch.sweep import mapped_event_types, type_chunks
from paystream.config import Settings
from schemas.envelopes import FetchResult

pytestmark = pytest.mark.kafka

# Mapped types spread over both chunks of 20, and types the catalog ignores, interleaved.
MAPPED = ["charge.refunded", "checkout.session.completed", "payment_intent.succeeded",
          "radar.early_fraud_warning.created", "refund.failed", "setup_intent.succeeded"]
IGNORED = ["customer.created", "invoice.paid", "setup_intent.created"]


class Sweeper(FetcherUnderTest):
    """``run_fetcher`` with only the ``events`` sweep, started and stopped by the test."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, FetchOptions(
            group_id=f"sweep-test-{uuid.uuid4().hex[:8]}", stripe_sweeps=("events",), sweep_page_limit=2,
            sweep_interval_s=0.2, commit_interval_s=0.2, shutdown_grace_s=5.0))


@pytest.fixture
async def sweeper(kafka_settings: Settings, settings_with: Callable[..., Settings]) -> AsyncIterator[Sweeper]:
    under_test = Sweeper(settings_with(kafka_settings))
    yield under_test
    await under_test.shutdown()


def add(double: ProviderDouble, number: int, event_type: str, created: int) -> str:
    event_id = f"evt_sweep_{number:03d}"
    double.add_stripe_event({"id": event_id, "object": "event", "type": event_type, "created": created,
                             "data": {"object": {"id": f"pi_sweep_{number:03d}", "object": "payment_intent"}}})
    return event_id


async def cursors(settings: Settings) -> dict[str, dict[str, Any]]:
    single = settings.model_copy(update={"topics": settings.topics.model_copy(update={"partitions": 1})})
    latest: dict[str, dict[str, Any]] = {}
    for record in await read_records(single, settings.topics.fetch_cursors):
        latest[record.key.decode()] = orjson.loads(record.value)
    return latest


async def test_the_sweep_publishes_only_mapped_types_each_once_with_a_cursor_per_chunk(
    double: ProviderDouble, kafka_settings: Settings, sweeper: Sweeper
) -> None:
    now = int(time.time())
    chunks = type_chunks("stripe:main:events", mapped_event_types())
    assert len(chunks) == 2 and all(len(chunk.types) <= 20 for chunk in chunks)
    assert {name for name in MAPPED for chunk in chunks if name in chunk.types} == set(MAPPED)
    assert {chunk.key for chunk in chunks for name in MAPPED if name in chunk.types} == {c.key for c in chunks}
    wanted: list[str] = []
    by_type: dict[str, str] = {}
    for number, event_type in enumerate([t for pair in zip(MAPPED, IGNORED * 2, strict=True) for t in pair]):
        event_id = add(double, number, event_type, now - 300 + number)
        by_type[event_id] = event_type
        if event_type in MAPPED:
            wanted.append(event_id)
    async with ResultReader(kafka_settings) as reader:
        sweeper.start()
        await eventually(lambda: len(reader.results) >= len(wanted), within_s=60)
        await sweeper.shutdown()
        first = list(reader.results)
        assert sorted(r.fetch_id for r in first) == sorted(wanted)  # every mapped event once, no ignored one
        assert all(r.reason == "sweep" and r.object_kind == "event" for r in first)
        # Each chunk's cursor is its own newest event: the double filtered on the chunk's types[] (unfiltered,
        # every chunk's page would end on the newest event of all, an ignored one).
        stored = await cursors(kafka_settings)
        for chunk in chunks:
            own = [event_id for event_id in wanted if by_type[event_id] in chunk.types]
            assert stored[chunk.key]["cursor"] == own[-1], (chunk.key, stored)
        stripe_calls = [r for r in double.requests if r.provider == "stripe" and r.path.endswith("/v1/events")]
        assert stripe_calls and all(r.status == 200 for r in stripe_calls)  # never more than 20 types[]

        later = [add(double, 100, "charge.dispute.closed", now - 10), add(double, 101, "customer.updated", now - 9),
                 add(double, 102, "review.opened", now - 8)]
        sweeper.start()  # a restarted fetcher resumes every chunk from its cursor
        await eventually(lambda: len(reader.results) >= len(wanted) + 2, within_s=60)
        await sweeper.shutdown()
    everything = [FetchResult.from_bytes(v.value) for v in await read_records(kafka_settings,
                                                                                kafka_settings.topics.fetch_results)]
    assert sorted(r.fetch_id for r in everything) == sorted([*wanted, later[0], later[2]])
