"""Freshness gauges from the current-state topic (``payments.state.v1``).

The stream engine has no timers and the reconcile stage only runs when an input arrives, so the gauges that
must move while nothing happens — the age of the oldest payment still waiting for news, how many have had no
status change for longer than the freshness SLO, and the authorisations about to lapse uncaptured — are
computed from the compacted current-state topic instead: it holds one document per payment
(:mod:`processors.state_doc`), those without any status event too (registered, named by a thin push, parked),
so reading it from the beginning (a bounded read, one record per payment after compaction) and then following
it gives an exact index after any restart. A payment whose polling ended (not found, past its horizon) or that
is quarantined waits for no news any more: it leaves the index (its end is counted by
``paystream_poll_chains_ended_total`` and shown in its document). The worker runs this in a thread of its own
(``ProcessorSettings.freshness_gauges``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from paystream.config import PROVIDERS, Settings
from paystream.logs import get_logger
from paystream.metrics import AUTHORIZATIONS_EXPIRING, OLDEST_NON_TERMINAL_AGE, STALE_PAYMENTS
from processors.kafka_client import connection_config
from processors.reconcile import AWAITING_NEWS
from schemas.event import parse_time

log = get_logger(__name__)

REFRESH_S = 5.0
_AWAITING = frozenset(status.value for status in AWAITING_NEWS)


@dataclass(frozen=True, slots=True)
class Waiting:
    provider: str
    first_seen: float  # unix seconds: when paystream first heard of the payment
    last_change: float  # unix seconds: receipt of the observation that set the current status
    expires: float | None = None  # an uncaptured authorisation's expiry (unix seconds)


class FreshnessIndex:
    """Payments awaiting news, by payment key (pure: fed records, asked for gauges)."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, Waiting] = {}

    def update(self, key: bytes, value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> None:
        if value is None:  # a tombstone: the payment is gone
            self.waiting.pop(key, None)
            return
        doc: dict[str, Any] = orjson.loads(value)
        event = doc.get("event")
        polling = doc.get("polling") or {}
        ended = polling.get("state") == "ended" or doc.get("quarantined") is not None
        if ended or (event is not None and (event.get("type") != "payment.status.changed"
                                            or event["data"]["status"] not in _AWAITING)):
            self.waiting.pop(key, None)
            return
        first_seen = parse_time(doc["first_seen_at"]).timestamp()
        if event is None:  # registered, named by a thin push, or parked: waiting since paystream heard of it
            self.waiting[key] = Waiting(doc["provider"], first_seen, first_seen)
            return
        data = event["data"]
        last_change = parse_time(data["observed_at"] or data["occurred_at"]).timestamp()
        expires = data.get("authorization_expires_at")
        self.waiting[key] = Waiting(
            data["provider"], min(first_seen, last_change), last_change,
            parse_time(expires).timestamp() if expires and data["status"] == "authorized" else None)

    def gauges(self, now_s: float, slo_s: float, warning_s: float = 86400.0) -> tuple[
            dict[str, float], dict[str, int], dict[str, int]]:
        """Per provider: the oldest waiting payment's age, how many are past the SLO, and how many uncaptured
        authorisations lapse within ``warning_s``."""
        oldest = dict.fromkeys(PROVIDERS, 0.0)
        late = dict.fromkeys(PROVIDERS, 0)
        expiring = dict.fromkeys(PROVIDERS, 0)
        for waiting in self.waiting.values():
            oldest[waiting.provider] = max(oldest.get(waiting.provider, 0.0), now_s - waiting.first_seen)
            if now_s - waiting.last_change > slo_s:
                late[waiting.provider] = late.get(waiting.provider, 0) + 1
            if waiting.expires is not None and waiting.expires - now_s <= warning_s:
                expiring[waiting.provider] = expiring.get(waiting.provider, 0) + 1
        return oldest, late, expiring


def export(index: FreshnessIndex, slo_s: float, now_s: float | None = None, warning_s: float = 86400.0) -> None:
    oldest, late, expiring = index.gauges(time.time() if now_s is None else now_s, slo_s, warning_s)
    for provider, age in oldest.items():
        OLDEST_NON_TERMINAL_AGE.labels(provider).set(age)
        STALE_PAYMENTS.labels(provider).set(late[provider])
        AUTHORIZATIONS_EXPIRING.labels(provider).set(expiring[provider])


def follow_state_topic(settings: Settings, stop: threading.Event, index: FreshnessIndex | None = None) -> None:
    """Read the current-state topic from the beginning and follow it until ``stop``; refresh the gauges
    every few seconds. Blocking (run it in a thread). librdkafka reconnects by itself through broker
    outages (the gauges keep their last values meanwhile) and parses records in C, so following a busy
    topic costs the worker's Python thread little."""
    index = index or FreshnessIndex()
    slo_s = settings.processor.freshness_slo_s
    topic = settings.topics.state
    connection = connection_config(settings.kafka, client_id=f"{settings.kafka.client_id}-processor-freshness")
    consumer = Consumer({
        **connection.as_librdkafka_dict(),
        # Partitions are assigned, never subscribed, and no offset is committed: the group id is only a
        # name librdkafka requires; the group is never joined.
        "group.id": f"{settings.processor.app_id}-freshness",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)
                         for partition in range(settings.topics.partitions)])
        last_export = 0.0
        while not stop.is_set():
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                if message.error() is not None:
                    log.warning("freshness_follow_error", error=str(message.error())[:300])
                    continue
                index.update(message.key() or b"", message.value(), message.headers() or ())
            if time.monotonic() - last_export >= REFRESH_S:
                export(index, slo_s, warning_s=settings.processor.authorization_expiry_warning_s)
                last_export = time.monotonic()
    finally:
        consumer.close()
