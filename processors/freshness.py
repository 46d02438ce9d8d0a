"""Freshness gauges from the current-state topic (``payments.state.v1``).

The stream engine has no timers and the reconcile stage only runs when an input arrives, so the gauges that
must move while nothing happens — the age of the oldest payment still waiting for news, and how many have
had no status change for longer than the freshness SLO — are computed from the compacted current-state topic
instead: it holds the latest event of every payment, so reading it from the beginning (a bounded read, one
record per payment after compaction) and then following it gives an exact index of the payments awaiting
news, after any restart. The worker runs this in its background thread (``ProcessorSettings.freshness_gauges``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from paystream.config import PROVIDERS, Settings
from paystream.kafka import make_consumer
from paystream.logs import get_logger
from paystream.metrics import OLDEST_NON_TERMINAL_AGE, STALE_PAYMENTS
from processors.reconcile import AWAITING_NEWS
from schemas.event import FIRST_SEEN_HEADER, parse_time

log = get_logger(__name__)

REFRESH_S = 5.0
_AWAITING = frozenset(status.value for status in AWAITING_NEWS)


@dataclass(frozen=True, slots=True)
class Waiting:
    provider: str
    first_seen: float  # unix seconds: when paystream first heard of the payment
    last_change: float  # unix seconds: receipt of the observation that set the current status


class FreshnessIndex:
    """Payments awaiting news, by payment key (pure: fed records, asked for gauges)."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, Waiting] = {}

    def update(self, key: bytes, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> None:
        if value is None:  # a tombstone: the payment is gone
            self.waiting.pop(key, None)
            return
        event: dict[str, Any] = orjson.loads(value)
        data = event["data"]
        if event.get("type") != "payment.status.changed" or data["status"] not in _AWAITING:
            self.waiting.pop(key, None)
            return
        last_change = parse_time(data["observed_at"] or data["occurred_at"]).timestamp()
        first = next((raw for name, raw in headers if name == FIRST_SEEN_HEADER), None)
        first_seen = parse_time(first.decode()).timestamp() if first else last_change
        self.waiting[key] = Waiting(data["provider"], min(first_seen, last_change), last_change)

    def gauges(self, now_s: float, slo_s: float) -> tuple[dict[str, float], dict[str, int]]:
        """Per provider: the oldest waiting payment's age, and how many are past the SLO."""
        oldest = dict.fromkeys(PROVIDERS, 0.0)
        late = dict.fromkeys(PROVIDERS, 0)
        for waiting in self.waiting.values():
            oldest[waiting.provider] = max(oldest.get(waiting.provider, 0.0), now_s - waiting.first_seen)
            if now_s - waiting.last_change > slo_s:
                late[waiting.provider] = late.get(waiting.provider, 0) + 1
        return oldest, late


def export(index: FreshnessIndex, slo_s: float, now_s: float | None = None) -> None:
    oldest, late = index.gauges(time.time() if now_s is None else now_s, slo_s)
    for provider, age in oldest.items():
        OLDEST_NON_TERMINAL_AGE.labels(provider).set(age)
        STALE_PAYMENTS.labels(provider).set(late[provider])


async def follow_state_topic(settings: Settings, stop: asyncio.Event, index: FreshnessIndex | None = None) -> None:
    """Read the current-state topic from the beginning and follow it until ``stop``; refresh the gauges
    every few seconds. Broker outages are waited out (the gauges keep their last values)."""
    index = index or FreshnessIndex()
    slo_s = settings.processor.freshness_slo_s
    topic = settings.topics.state
    while not stop.is_set():
        consumer = make_consumer(settings, group_id=None, client_suffix="processor-freshness")
        try:
            await consumer.start()
            partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            last_export = 0.0
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
                for records in batches.values():
                    for record in records:
                        index.update(record.key or b"", record.value, record.headers or ())
                if time.monotonic() - last_export >= REFRESH_S:
                    export(index, slo_s)
                    last_export = time.monotonic()
        except (KafkaError, OSError) as exc:
            log.warning("freshness_follow_failed", error=repr(exc)[:300])
            await _sleep_unless(stop, 5.0)
        finally:
            await consumer.stop()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
