"""Small helpers shared by the fetcher tests (and the reliability suite's fetcher scenarios)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.fetch.lane import Decision
from ingest.fetch.options import FetchOptions
from ingest.fetch.service import run_fetcher
from paystream.config import Settings
from paystream.kafka import make_consumer
from schemas.envelopes import FetchReason, FetchRequest, FetchResult, to_rfc3339
from schemas.observation import payment_key


@dataclass(frozen=True)
class AmazonKeys:
    public_key_id: str
    private_pem_path: Path
    public_pem: bytes


def fetch_request(provider: str, account: str, object_type: str, object_id: str, *, request_id: str,
                  reason: FetchReason = "thin_push", delay_s: float = 0.0, attempt: int = 1) -> FetchRequest:
    """A fetch request as the processor writes it, due ``delay_s`` from now."""
    now = datetime.now(UTC)
    return FetchRequest(
        payment_key=payment_key(provider, account, object_type, object_id), provider=provider, account=account,
        object_type=object_type, object_id=object_id, reason=reason,
        not_before=to_rfc3339(now + timedelta(seconds=delay_s)), requested_at=to_rfc3339(now),
        request_id=request_id, attempt=attempt,
    )


async def eventually(predicate: Callable[[], bool], *, within_s: float = 20.0) -> None:
    """Wait until ``predicate()`` holds (a safety limit against hanging, not a speed requirement)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class MemorySink:
    """Collects the engine's decisions (the Kafka sink is exercised by the broker tests)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    async def deliver(self, decision: Decision) -> None:
        self.decisions.append(decision)

    @property
    def results(self) -> list[FetchResult]:
        return [d.result for d in self.decisions if d.result is not None]

    @property
    def retries(self) -> list[FetchRequest]:
        return [d.retry for d in self.decisions if d.retry is not None]


# --- reading the fetcher's topics on the real broker -------------------------------------------------


async def read_records(settings: Settings, topic: str) -> list[Any]:
    """Every record on ``topic`` now (from the beginning to the current end)."""
    consumer = make_consumer(settings, group_id=None, client_suffix="test-reader")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(partitions)
        found: list[Any] = []
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


class ResultReader:
    """Follows the results topic from the beginning."""

    def __init__(self, settings: Settings) -> None:
        self.consumer: AIOKafkaConsumer = make_consumer(settings, group_id=None, client_suffix="test-results")
        self.topic = settings.topics.fetch_results
        self.partitions = settings.topics.partitions
        self.results: list[FetchResult] = []

    async def __aenter__(self) -> ResultReader:
        await self.consumer.start()
        # Assigned, not subscribed: a topic created a moment ago may not be in the broker's metadata yet,
        # and a subscription that misses it waits for the next metadata refresh (minutes).
        deadline = time.monotonic() + 30
        while self.topic not in await self.consumer.topics():
            assert time.monotonic() < deadline, f"{self.topic} not in the cluster metadata"
            await asyncio.sleep(0.1)
        self.consumer.assign([TopicPartition(self.topic, p) for p in range(self.partitions)])
        await self.consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        async for record in self.consumer:
            self.results.append(FetchResult.from_bytes(record.value))

    async def __aexit__(self, *_: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


class FetcherUnderTest:
    """``run_fetcher`` as a task, started and stopped by the test."""

    def __init__(self, settings: Settings, opts: FetchOptions) -> None:
        self.settings = settings
        self.options = opts
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_fetcher(self.settings, self.stop, self.options))

    async def shutdown(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
            self.task = None
