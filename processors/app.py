"""The faust app of ``paystream process``: normalize → (repartition by payment key) → reconcile.

Agents (all ``concurrency=1``; at-least-once, no exactly-once mode):

* ``normalize_inbox``: inbox envelopes → observations on the internal topic (keyed by payment key) and
  fetch requests; deliveries already in the dedupe ledger are dropped (replayed records bypass it).
* ``normalize_fetch_results``: fetch results → observations (``source=poll``).
* ``reconcile``: observations → the join state in the ``payments`` table → CloudEvents on the status
  topic, only when status or amounts changed.

Order of effects per batch, which is what makes a SIGKILL safe: outputs (observations, fetch requests,
status events, dead letters) are sent and acknowledged first; then the tables are written and their
changelog records acknowledged (:mod:`processors.changelog`); only then is the batch acked
(:mod:`processors.batching`). A crash in between re-processes the batch:
the outputs are sent again with the same keys and deterministic event ids and sequences, and nothing is
lost. Tables use ``use_partitioner=True``: a key's changelog partition is the partition its source record
was keyed to (same key bytes, same default partitioner), so batched writes and timers write to the right
partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from paystream.config import PROVIDERS, Settings
from paystream.dlq import dlq_headers, reason_of
from paystream.logs import get_logger
from paystream.metrics import (
    DLQ,
    DUPLICATES,
    FETCH_REQUESTS_EMITTED,
    OBSERVATIONS,
    OLDEST_NON_TERMINAL_AGE,
    PARKED,
    STALE_PAYMENTS,
    STATUS_EVENTS,
)
from processors import dedupe, faust_fixes, rocksdb_store
from processors.batching import acked_batches
from processors.changelog import ChangelogWaiter
from processors.codec import ObservationRecord
from processors.faust_security import faust_broker_credentials
from processors.normalize import Normalized, Normalizer
from processors.providers import POLLABLE
from processors.reconcile import reconcile
from processors.scheduling import PollSchedule, StalePoller, freshness
from processors.settings import ProcessorSettings
from schemas.envelopes import FetchResult, InboxEnvelope
from schemas.event import EVENT_CONTENT_TYPE, serialize_event
from schemas.join import PaymentState

log = get_logger(__name__)

BATCH_MAX = 500
# How often the idle agents look for records faust dropped (a drop is acted on when seen twice in a row).
DROPPED_RECORD_CHECK_S = 5.0
# One pending output: (topic, key, value, headers).
Output = tuple[Any, bytes, bytes, list[tuple[str, bytes]] | None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def deliver_all(outputs: Sequence[Output]) -> None:
    """Send and wait for every acknowledgement; retry failures forever (never ack a batch whose outputs
    are not on the broker: faust acks the batch's offsets when this returns)."""
    pending = list(outputs)
    delay = 0.2
    while pending:
        futures: list[Any] = []
        for topic, key, value, headers in pending:
            try:
                futures.append(await topic.send(key=key, value=value, headers=headers))
            except Exception as exc:  # the producer refused: treat like a failed delivery
                futures.append(exc)
        results = await asyncio.gather(
            *(_settle(future) for future in futures), return_exceptions=True
        )
        failed = [item for item, result in zip(pending, results, strict=True) if isinstance(result, BaseException)]
        if failed:
            log.warning("processor_send_failed", failed=len(failed), error=repr(next(
                r for r in results if isinstance(r, BaseException))))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        pending = failed


async def _settle(future: Any) -> Any:
    if isinstance(future, BaseException):
        raise future
    return await future


class Processor:
    """Builds the faust app and holds what its agents share."""

    def __init__(self, settings: Settings, processor: ProcessorSettings) -> None:
        self.settings = settings
        self.conf = processor
        topics = settings.topics
        datadir = settings.state_dir / "processor"
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            processor.app_id,
            broker="kafka://" + settings.kafka.bootstrap,
            broker_credentials=faust_broker_credentials(settings.kafka),
            store=processor.store,
            datadir=str(datadir),
            topic_partitions=topics.partitions,
            topic_replication_factor=topics.replication_factor,
            topic_disable_leader=True,
            processing_guarantee="at_least_once",
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=processor.commit_interval_s,
            broker_session_timeout=processor.session_timeout_s,
            broker_heartbeat_interval=min(3.0, processor.session_timeout_s / 3),
            table_standby_replicas=0,
            web_enabled=False,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                               "value_serializer": "raw"}
        self.inbox = self.app.topic(topics.inbox, **raw)
        self.fetch_results = self.app.topic(topics.fetch_results, **raw)
        self.fetch_requests = self.app.topic(topics.fetch_requests, **raw)
        self.status = self.app.topic(topics.status, **raw)
        self.dlq = self.app.topic(topics.dlq, **raw)
        self.observations = self.app.topic(
            processor.observations_topic(), internal=True, partitions=topics.partitions,
            replicas=topics.replication_factor, **raw,
        )
        self.changelog = ChangelogWaiter()
        self.payments = self._table("payments", "join state per payment key")
        self.schedule = self._table("poll-schedule", "payments awaiting news")
        self.ledger = self._table("dedupe", "delivery key -> first seen")
        self.normalizer = Normalizer(settings)
        self.poller = StalePoller(PollSchedule(processor.poll_schedule_s, processor.poll_repeat_s), POLLABLE)
        self.parked: set[bytes] = set()
        self.dropped_records = faust_fixes.DroppedRecordCheck()
        self._register()

    def _table(self, name: str, help_text: str) -> Any:
        table: Any = self.app.Table(name, key_type=bytes, value_type=bytes, partitions=self.settings.topics.partitions,
                               use_partitioner=True, help=help_text)
        # Keys and values are bytes we encode ourselves (faust would default to its json codec). Set before
        # the changelog topic is first created, which reads these attributes.
        table.key_serializer = "raw"
        table.value_serializer = "raw"
        self.changelog.watch(table)
        return table

    def _register(self) -> None:
        app, conf = self.app, self.conf
        app.agent(self.inbox, name="normalize-inbox", concurrency=1)(self.normalize_inbox)
        app.agent(self.fetch_results, name="normalize-fetch-results", concurrency=1)(
            self.normalize_fetch_results)
        app.agent(self.observations, name="reconcile", concurrency=1)(self.reconcile)
        app.timer(conf.schedule_tick_s, name="stale-payments")(self.poll_stale_payments)
        app.timer(conf.dedupe_sweep_interval_s, name="dedupe-sweep")(self.sweep_ledger)
        app.timer(DROPPED_RECORD_CHECK_S, name="dropped-records")(self.refetch_dropped_records)

    # --- helpers ------------------------------------------------------------------------------
    def _dead_letter(self, event: Any, error: BaseException, now: datetime) -> Output:
        message = event.message
        DLQ.labels(message.topic, reason_of(error)).inc()
        log.warning("dead_lettered", topic=message.topic, partition=message.partition, offset=message.offset,
                    error_class=type(error).__name__, error=str(error)[:300])
        headers = dlq_headers(list(message.headers or []), error=error, topic=message.topic,
                              partition=message.partition, offset=message.offset, now=now)
        return (self.dlq, message.key, message.value, headers)

    def _normalized_outputs(self, normalized: Normalized) -> list[Output]:
        outputs: list[Output] = [
            (self.observations, record.key, record.to_bytes(), None) for record in normalized.observations
        ]
        outputs += [(self.fetch_requests, request.key, request.to_bytes(), None)
                    for request in normalized.fetch_requests]
        return outputs

    @staticmethod
    def _count(normalized: Iterable[Normalized]) -> None:
        for result in normalized:
            for record in result.observations:
                OBSERVATIONS.labels(record.observation.provider, record.observation.source.value).inc()
            for request in result.fetch_requests:
                FETCH_REQUESTS_EMITTED.labels(request.provider, request.reason).inc()

    # --- agents -------------------------------------------------------------------------------
    async def normalize_inbox(self, stream: Any) -> None:
        ttl = self.conf.dedupe_ttl_s
        async for events in acked_batches(stream, BATCH_MAX):
            now = _utcnow()
            outputs: list[Output] = []
            results: list[Normalized] = []
            seen: dict[bytes, bytes] = {}
            for event in events:
                message = event.message
                try:
                    envelope = InboxEnvelope.from_bytes(message.value)
                    delivery_key = message.key or envelope.key
                    if envelope.replay is None and self._seen(delivery_key, seen, now, ttl):
                        DUPLICATES.labels(envelope.provider).inc()
                        continue
                    result = self.normalizer.inbox(envelope, now)
                except Exception as exc:  # anything but an infrastructure failure: dead-letter it
                    outputs.append(self._dead_letter(event, exc, now))
                    continue
                outputs += self._normalized_outputs(result)
                results.append(result)
                if envelope.replay is None:
                    seen[delivery_key] = dedupe.entry(now.timestamp())
            await deliver_all(outputs)
            self._count(results)
            for key, value in seen.items():
                self.ledger[key] = value
            await self.changelog.written()

    def _seen(self, key: bytes, batch: dict[bytes, bytes], now: datetime, ttl: float) -> bool:
        return key in batch or dedupe.is_duplicate(self.ledger.get(key), now.timestamp(), ttl)

    async def normalize_fetch_results(self, stream: Any) -> None:
        async for events in acked_batches(stream, BATCH_MAX):
            now = _utcnow()
            outputs: list[Output] = []
            results: list[Normalized] = []
            for event in events:
                try:
                    result = self.normalizer.fetch_result(FetchResult.from_bytes(event.message.value))
                except Exception as exc:
                    outputs.append(self._dead_letter(event, exc, now))
                    continue
                outputs += self._normalized_outputs(result)
                results.append(result)
            await deliver_all(outputs)
            self._count(results)

    async def reconcile(self, stream: Any) -> None:
        async for events in acked_batches(stream, BATCH_MAX):
            now = _utcnow()
            outputs: list[Output] = []
            states: dict[bytes, PaymentState | None] = {}
            changed: dict[bytes, PaymentState] = {}
            schedule: dict[bytes, dict[str, Any] | None] = {}
            emitted: list[dict[str, Any]] = []
            for event in events:
                try:
                    record = ObservationRecord.from_bytes(event.message.value)
                    key = record.key
                    prev = states[key] if key in states else self._load(key)
                    result = reconcile(prev, record, now)
                except Exception as exc:
                    outputs.append(self._dead_letter(event, exc, now))
                    continue
                states[key] = result.state
                if result.event is not None:
                    outputs.append((self.status, key, serialize_event(result.event),
                                    [("content-type", EVENT_CONTENT_TYPE.encode())]))
                    emitted.append(result.event)
                if not result.duplicate:
                    changed[key] = result.state
                    schedule[key] = result.schedule
            await deliver_all(outputs)
            for cloud_event in emitted:
                STATUS_EVENTS.labels(cloud_event["data"]["provider"], cloud_event["type"]).inc()
            self._store(changed, schedule)
            await self.changelog.written()

    def _load(self, key: bytes) -> PaymentState | None:
        raw = self.payments.get(key)
        return None if raw is None else PaymentState.from_dict(orjson.loads(raw))

    def _store(self, changed: dict[bytes, PaymentState], schedule: dict[bytes, dict[str, Any] | None]) -> None:
        for key, state in changed.items():
            self.payments[key] = orjson.dumps(state.to_dict())
            if state.status is None:
                self.parked.add(key)
            else:
                self.parked.discard(key)
        for key, entry in schedule.items():
            if entry is not None:
                self.schedule[key] = orjson.dumps(entry)
            elif key in self.schedule:
                del self.schedule[key]
        PARKED.set(len(self.parked))

    # --- timers -------------------------------------------------------------------------------
    def _active_entries(self) -> list[tuple[str, dict[str, Any]]]:
        """Schedule entries of the partitions this worker owns (never a standby's)."""
        topic = self.observations.get_topic_name()
        actives = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        partitions = self.settings.topics.partitions
        return [
            (key.decode(), orjson.loads(value)) for key, value in list(self.schedule.items())
            if (murmur2(key) & 0x7FFFFFFF) % partitions in actives
        ]

    async def poll_stale_payments(self) -> None:
        now = _utcnow()
        entries = self._active_entries()
        requests = self.poller.due(entries, now)
        await deliver_all([(self.fetch_requests, request.key, request.to_bytes(), None) for request in requests])
        for request in requests:
            FETCH_REQUESTS_EMITTED.labels(request.provider, request.reason).inc()
        oldest, late = freshness((entry for _, entry in entries), now, self.conf.freshness_slo_s, PROVIDERS)
        for provider, age in oldest.items():
            OLDEST_NON_TERMINAL_AGE.labels(provider).set(age)
            STALE_PAYMENTS.labels(provider).set(late[provider])

    async def refetch_dropped_records(self) -> None:
        await self.dropped_records(self.app.consumer)

    async def sweep_ledger(self) -> None:
        now_s = _utcnow().timestamp()
        expired = [key for key, value in list(self.ledger.items())
                   if dedupe.is_expired(value, now_s, self.conf.dedupe_ttl_s)]
        for key in expired:
            del self.ledger[key]
        await self.changelog.written()
        if expired:
            log.info("dedupe_ledger_swept", expired=len(expired))


def create_app(settings: Settings, processor: ProcessorSettings | None = None) -> faust.App:
    """The faust app; ``processor`` defaults to ``settings.processor`` once the lead mounts it."""
    conf = processor or settings.processor
    topics = settings.topics
    faust_fixes.install({topics.inbox, topics.fetch_results, conf.observations_topic()})
    rocksdb_store.register()
    return Processor(settings, conf).app
