"""The Quix Streams application of ``paystream process``: two stages joined by one internal topic.

::

    payments.inbox.v1 ─────────► intake ─┐                                    ┌─► payments.status.v1
                                         ├─► {app_id}-payment-inputs ─► reconcile ├─► payments.state.v1
    payments.fetch.results.v1 ─► intake ─┘   (keyed by payment key)     (state) ├─► payments.fetch.requests.v1
                                                                                └─► payments.dlq.v1

* **intake** (stateless) reads a delivery or a fetch result, normalizes it with the provider parsers
  (:mod:`processors.normalize`) and writes one input per payment it concerns to the internal topic, keyed by
  payment key: that is the repartition that brings everything about one payment to one task, in order.
* **reconcile** (stateful, per payment key) applies each input to the payment's record
  (:mod:`processors.reconcile`): dedupe, the pure join, the stale-poll chain. It emits the status event, the
  payment's current-state document (:mod:`processors.state_doc`) when it changed, and fetch requests. A record
  that would pass ``max_record_bytes`` is not written: the payment is quarantined (its inputs copied to the DLQ)
  and the partition goes on.

Every stage routes what it produces with :class:`Output` (topic, key, value, headers): one ``to_topic`` per
stage picks the topic from the output. A record a stage cannot handle goes to the DLQ unchanged with the
error headers of :mod:`paystream.dlq`; nothing raises out of a stage but an engine failure.

Exactly-once (the default): each checkpoint — the outputs of both stages, the state changelog and the input
offsets — is one Kafka transaction, so a ``read_committed`` consumer sees every event exactly once across
crashes and rebalances. At-least-once (a setting) may repeat events after a crash; they repeat with the same
deterministic id and sequence.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from quixstreams import Application, message_context
from quixstreams.models import TopicConfig
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.state import State

from paystream.config import PROVIDERS, Settings
from paystream.dlq import dlq_headers, reason_of
from paystream.errors import PaymentQuarantined, UnknownProviderStatus
from paystream.logs import get_logger
from paystream.metrics import DLQ, QUARANTINED, RECORD_BYTES, UNKNOWN_PROVIDER_WORDS
from processors import payment_inputs
from processors.internal_topics import changelog_topic, limits
from processors.kafka_client import connection_config
from processors.normalize import Normalizer, Unparseable
from processors.payment_inputs import PaymentInput
from processors.payment_record import PaymentRecord, RecordCodec
from processors.providers import POLLED_OBJECT_TYPES
from processors.readiness import STATS_INTERVAL_MS, Readiness
from processors.reconcile import Reconciled, Reconciler
from processors.scheduling import Horizons, PollSchedule
from processors.settings import ProcessorSettings
from processors.state_doc import CONTENT_TYPE as STATE_CONTENT_TYPE
from processors.state_doc import document, signature
from schemas.envelopes import FetchResult, InboxEnvelope
from schemas.event import EVENT_CONTENT_TYPE

log = get_logger(__name__)

RECORD = "payment"  # the one state key per payment key
_CONTENT_TYPE = ("content-type", EVENT_CONTENT_TYPE.encode())
_JSON = ("content-type", STATE_CONTENT_TYPE)
Headers = list[tuple[str, bytes]]


class Output(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None = None


class OutputSerializer(Serializer):
    """The value of an :class:`Output` is already bytes."""

    def __call__(self, value: Output, ctx: SerializationContext) -> bytes:
        return value.value


@dataclass(frozen=True, slots=True)
class TopicNames:
    inbox: str
    fetch_results: str
    inputs: str
    status: str
    state: str
    fetch_requests: str
    dlq: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Stages:
    """The functions the two stages run per record; plain methods, testable without Kafka."""

    def __init__(self, settings: Settings, conf: ProcessorSettings, topics: TopicNames,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.topics = topics
        self.clock = clock
        self.normalizer = Normalizer(settings)
        self.schedule = PollSchedule(conf.poll_schedule_s, conf.poll_repeat_s)
        self.reconciler = Reconciler(
            self.schedule, POLLED_OBJECT_TYPES, conf.dedupe_ttl_s, epoch=conf.epoch,
            horizons=Horizons(conf.poll_not_found_limit, conf.poll_horizon_s, conf.poll_expiry_grace_s))
        self.max_record_bytes = conf.max_record_bytes
        self.codec = RecordCodec()

    def inbox(self, value: bytes, key: bytes | None, _timestamp: int, headers: Any) -> list[Output]:
        now = self.clock()
        try:
            inputs = self.normalizer.inbox(InboxEnvelope.from_bytes(value), now)
        except Exception as exc:  # anything but an engine failure: the record goes to the DLQ
            return [self._dead_letter(value, key, headers, exc, now)]
        return [Output(self.topics.inputs, item.payment_key.encode(), payment_inputs.encode(item))
                for item in inputs]

    def fetch_result(self, value: bytes, key: bytes | None, _timestamp: int, headers: Any) -> list[Output]:
        now = self.clock()
        try:
            inputs = self.normalizer.fetch_result(FetchResult.from_bytes(value))
        except Exception as exc:
            return [self._dead_letter(value, key, headers, exc, now)]
        if isinstance(inputs, Unparseable):  # the body to the DLQ; the poll still moves its chain on
            polled = inputs.polled
            return [self._dead_letter(value, key, headers, inputs.error, now),
                    Output(self.topics.inputs, polled.payment_key.encode(), payment_inputs.encode(polled))]
        return [Output(self.topics.inputs, item.payment_key.encode(), payment_inputs.encode(item))
                for item in inputs]

    def reconcile(self, value: bytes, key: bytes, _timestamp: int, headers: Any,
                  state: State[str, bytes]) -> list[Output]:
        now = self.clock()
        try:
            item = payment_inputs.decode(value)
            record = self.codec.decode(key, state.get_bytes(RECORD))
            result = self.reconciler(record, item, now)
        except Exception as exc:
            return [self._dead_letter(value, key, headers, exc, now)]
        outputs: list[Output] = []
        if result.quarantined:
            return [self._dead_letter(value, key, headers, PaymentQuarantined(key.decode(errors="replace")), now)]
        if result.changed:
            raw = self.codec.encode(key, result.record)
            RECORD_BYTES.observe(len(raw))
            if len(raw) > self.max_record_bytes:
                return self._quarantine(record, result, item, value, key, headers, len(raw), state, now)
            state.set_bytes(RECORD, raw)
        if result.event_bytes is not None:
            outputs.append(Output(self.topics.status, key, result.event_bytes, [_CONTENT_TYPE]))
        if result.changed and signature(record) != signature(result.record):
            outputs.append(self._state_document(key, result.record, now))
        outputs += [Output(self.topics.fetch_requests, request.key, request.to_bytes())
                    for request in result.fetch_requests]
        return outputs

    def _state_document(self, key: bytes, record: PaymentRecord, now: datetime) -> Output:
        return Output(self.topics.state, key, document(key.decode(), record, self.schedule, now), [_JSON])

    def _quarantine(self, stored: PaymentRecord | None, result: Reconciled, item: PaymentInput, value: bytes,
                    key: bytes, headers: Any, size: int, state: State[str, bytes], now: datetime) -> list[Output]:
        """The record would pass the hard cap: keep the last stored one, flagged, and copy the input to the DLQ
        (a person decides); the partition and the worker go on."""
        base = stored or PaymentRecord(first_seen=now.timestamp(), state=None)
        flagged = self.reconciler.quarantine(base, "record_size_cap", size, now)
        state.set_bytes(RECORD, self.codec.encode(key, flagged))
        provider = key.decode(errors="replace").split(":", 1)[0]
        QUARANTINED.labels(provider if provider in PROVIDERS else "unknown").inc()
        log.error("payment_quarantined", payment_key=key.decode(errors="replace"), record_bytes=size,
                  cap_bytes=self.max_record_bytes)
        error = PaymentQuarantined(f"{key.decode(errors='replace')}: record would be {size} bytes "
                                   f"(cap {self.max_record_bytes}): quarantined")
        return [self._dead_letter(value, key, headers, error, now), self._state_document(key, flagged, now)]

    def _dead_letter(self, value: bytes, key: bytes | None, headers: Any, error: BaseException,
                     now: datetime) -> Output:
        where = message_context()
        DLQ.labels(where.topic, reason_of(error)).inc()
        if isinstance(error, UnknownProviderStatus) and error.provider and error.word:
            UNKNOWN_PROVIDER_WORDS.labels(error.provider, error.word[:64]).inc()
        log.warning("dead_lettered", topic=where.topic, partition=where.partition, offset=where.offset,
                    error_class=type(error).__name__, error=str(error)[:300])
        original = [(name, bytes(raw)) for name, raw in (headers or [])]
        return Output(self.topics.dlq, key, value, dlq_headers(original, error=error, topic=where.topic,
                                                              partition=where.partition, offset=where.offset,
                                                              now=now))


def transactional_id(conf: ProcessorSettings) -> str:
    return f"{conf.app_id}-{conf.worker_id or socket.gethostname()}"


def internal_topics(settings: Settings, conf: ProcessorSettings) -> list[tuple[str, dict[str, str]]]:
    """The processor's internal topics with their own configuration (:mod:`processors.internal_topics`)."""
    inputs = conf.inputs_topic()
    return [(inputs, {"retention.ms": str(settings.topics.inbox_retention_ms)}),
            (changelog_topic(conf.app_id, inputs), {"cleanup.policy": "compact"})]


def topic_names(settings: Settings, conf: ProcessorSettings) -> TopicNames:
    topics = settings.topics
    return TopicNames(inbox=topics.inbox, fetch_results=topics.fetch_results, inputs=conf.inputs_topic(),
                      status=topics.status, state=topics.state, fetch_requests=topics.fetch_requests,
                      dlq=topics.dlq)


def build_application(settings: Settings, conf: ProcessorSettings, readiness: Readiness) -> Application:
    """The Quix Streams application, not yet running (``app.run()`` blocks until SIGTERM / SIGINT)."""
    kafka = settings.kafka
    names = topic_names(settings, conf)
    state_dir = settings.state_dir / "processor"
    state_dir.mkdir(parents=True, exist_ok=True)
    app = Application(
        broker_address=connection_config(kafka, client_id=f"{kafka.client_id}-processor"),
        consumer_group=conf.app_id,
        auto_offset_reset="earliest",
        processing_guarantee=conf.processing_guarantee,
        commit_interval=conf.commit_interval_s,
        commit_every=conf.commit_every,
        # The engine checks for a due checkpoint between polls: a poll that waits its default 1 s for a record
        # that does not come holds the commit (and the visibility of what was processed) that long.
        consumer_poll_timeout=min(conf.commit_interval_s / 2, 0.1),
        state_dir=state_dir,
        loglevel=None,  # the quixstreams logger goes through paystream.logs like every stdlib logger
        consumer_extra_config={
            "session.timeout.ms": int(conf.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, conf.session_timeout_s / 3) * 1000),
            "statistics.interval.ms": STATS_INTERVAL_MS,
            # read_committed fetches of the internal topic only see records once the intake's transaction
            # commits; a short broker-side wait keeps the second stage from idling behind it.
            "fetch.wait.max.ms": 50,
            "stats_cb": readiness.observe,
        },
        producer_extra_config={
            # Stable per worker slot and unique among live workers (ProcessorSettings.worker_id), prefixed with
            # the app id so one ACL prefix grants every worker its transactions. A restarted worker's producer
            # fences its predecessor and aborts its open transaction when it starts, so read_committed consumers
            # are not held until the transaction timeout (zombies are also fenced by the group's generation,
            # KIP-447).
            "transactional.id": transactional_id(conf),
            # ProcessorSettings.transaction_timeout_s: 10 s failed a 20 s broker restart; the 60 s default
            # outlasted Quix Streams' 30 s offset lookup after a SIGKILL of a worker with another id.
            "transaction.timeout.ms": int(conf.transaction_timeout_s * 1000),
            # Outputs only become visible when their checkpoint commits (and the commit flushes the producer), so
            # a longer linger costs no latency; it saves the broker-thread wake-up (a syscall) librdkafka makes
            # for nearly every record when batches close after 2 ms.
            "linger.ms": max(kafka.linger_ms, 20),
            # The Java client's partitioner (murmur2), as aiokafka's: ingest and the fetcher put a payment's
            # records in the same partition as the processor does.
            "partitioner": "murmur2_random",
            "message.max.bytes": kafka.max_request_size,
            "request.timeout.ms": kafka.request_timeout_ms,
        },
    )
    raw: dict[str, Any] = {"key_deserializer": "bytes", "value_deserializer": "bytes",
                           "key_serializer": "bytes", "value_serializer": OutputSerializer()}
    partitions, replicas = settings.topics.partitions, settings.topics.replication_factor
    topics = {
        name: app.topic(name, **raw) for name in
        (names.inbox, names.fetch_results, names.status, names.state, names.fetch_requests, names.dlq)
    }
    topics[names.inputs] = app.topic(names.inputs, **raw, config=TopicConfig(
        num_partitions=partitions, replication_factor=replicas,
        extra_config={"retention.ms": str(settings.topics.inbox_retention_ms), **limits(conf)}))

    stages = Stages(settings, conf, names)

    def route(sdf: Any) -> None:
        # Every output is stamped with the time it is produced (the engine would copy the input's timestamp):
        # a status event's record time is when paystream emitted it.
        sdf = sdf.set_timestamp(lambda _value, _key, _timestamp, _headers: time.time_ns() // 1_000_000)
        sdf = sdf.set_headers(lambda value, _key, _timestamp, _headers: value.headers)
        sdf.to_topic(lambda value, _key, _timestamp, _headers: topics[value.topic], key=lambda value: value.key)

    route(app.dataframe(topics[names.inbox]).apply(stages.inbox, metadata=True, expand=True))
    route(app.dataframe(topics[names.fetch_results]).apply(stages.fetch_result, metadata=True, expand=True))
    route(app.dataframe(topics[names.inputs]).apply(stages.reconcile, stateful=True, metadata=True, expand=True))
    return app
