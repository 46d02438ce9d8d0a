"""The Quix Streams application of ``paystream process``: one stateful stage over its three inputs.

::

    payments.inbox.v1 ──────────────┐                     ┌─► payments.status.v1
    payments.fetch.results.v1 ──────┼─► process (state) ──┼─► payments.state.v1
    {app_id}-payment-inputs ────────┘   per payment key   ├─► payments.fetch.requests.v1
      (redirects)            ▲                             ├─► payments.dlq.v1
                             └─────────────────────────────┘ (an input about another payment)

Everything about one payment lands in one partition as it is published: ingest keys each delivery and the
fetcher each result by the payment it is about (:mod:`ingest.providers.routing`). So the processor is **one
stateful stage with one store** (the three topics concatenated, co-partitioned by payment key), and one
exactly-once checkpoint lies between a delivery and its status event. Per record, :meth:`Stages.process`
normalizes it with the provider parsers (:mod:`processors.normalize`), applies its inputs about the record's
payment to the payment's record (:mod:`processors.reconcile`: the pure join, the stale-poll chain), read and
written once, and emits the status events, the payment's current-state document (:mod:`processors.state_doc`)
when it changed, and fetch requests. The rare input about another payment (the other payments of a Mollie
order, a Refund filed under its Charge, a record published before the routing) is **redirected** to the
internal topic ``{app_id}-payment-inputs`` keyed by that payment, in the same transaction, and applied when it
comes back round. A record that would pass ``max_record_bytes`` is not written: the payment is quarantined (its
inputs copied to the DLQ) and the partition goes on.

Every output is an :class:`Output` (topic, key, value, headers): one ``to_topic`` picks the topic from the
output. A record the stage cannot handle goes to the DLQ unchanged with the error headers of
:mod:`paystream.dlq`; nothing raises out of the stage but an engine failure.

Exactly-once (the default): each checkpoint — the outputs, the state changelog and the input offsets — is one
Kafka transaction, so a ``read_committed`` consumer sees every event exactly once across crashes and
rebalances. At-least-once (a setting) may repeat events after a crash; they repeat with the same deterministic
id and sequence.
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

from ingest.providers.parsing import POLLED_OBJECT_TYPES
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
from processors.readiness import STATS_INTERVAL_MS, Readiness
from processors.reconcile import Reconciler
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
    """What the stage does per record; plain methods, testable without Kafka (``message_context()`` gives the
    record's topic, partition and offset)."""

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

    def process(self, value: bytes, key: bytes | None, _timestamp: int, headers: Any,
                state: State[str, bytes]) -> list[Output]:
        """One record of any input topic: its inputs about this record's payment are applied here, the rare
        ones about another payment are redirected to it (the redirect topic, keyed by that payment)."""
        now = self.clock()
        outputs: list[Output] = []
        topic = message_context().topic
        try:
            if topic == self.topics.inbox:
                inputs = self.normalizer.inbox(InboxEnvelope.from_bytes(value), now)
            elif topic == self.topics.fetch_results:
                found = self.normalizer.fetch_result(FetchResult.from_bytes(value))
                if isinstance(found, Unparseable):  # the body to the DLQ; the poll still moves its chain on
                    outputs.append(self._dead_letter(value, key, headers, found.error, now))
                    found = [found.polled]
                inputs = found
            else:
                inputs = [payment_inputs.decode(value)]
        except Exception as exc:  # anything but an engine failure: the record goes to the DLQ
            return [self._dead_letter(value, key, headers, exc, now)]
        here: list[PaymentInput] = []
        for item in inputs:
            target = item.payment_key.encode()
            if target == key:
                here.append(item)
            else:
                outputs.append(Output(self.topics.inputs, target, payment_inputs.encode(item)))
        if here:
            assert key is not None
            outputs += self._apply(key, here, value, headers, state, now)
        return outputs

    def _apply(self, key: bytes, inputs: list[PaymentInput], value: bytes, headers: Any,
               state: State[str, bytes], now: datetime) -> list[Output]:
        """Apply a record's inputs to its payment's record, read and written once."""
        try:
            stored = self.codec.decode(key, state.get_bytes(RECORD))
        except Exception as exc:
            return [self._dead_letter(value, key, headers, exc, now)]
        record, changed = stored, False
        outputs: list[Output] = []
        requests: list[Output] = []
        for item in inputs:
            try:
                result = self.reconciler(record, item, now)
            except Exception as exc:  # this input goes to the DLQ (with its record); the others still apply
                outputs.append(self._dead_letter(value, key, headers, exc, now))
                continue
            if result.quarantined:
                error = PaymentQuarantined(f"{key.decode(errors='replace')}: quarantined")
                return [self._dead_letter(value, key, headers, error, now)]
            record, changed = result.record, changed or result.changed
            if result.event_bytes is not None:
                outputs.append(Output(self.topics.status, key, result.event_bytes, [_CONTENT_TYPE]))
            requests += [Output(self.topics.fetch_requests, request.key, request.to_bytes())
                         for request in result.fetch_requests]
        if changed and record is not None:
            raw = self.codec.encode(key, record)
            RECORD_BYTES.observe(len(raw))
            if len(raw) > self.max_record_bytes:
                return self._quarantine(stored, value, key, headers, len(raw), state, now)
            state.set_bytes(RECORD, raw)
            if signature(stored) != signature(record):
                outputs.append(self._state_document(key, record, now))
        return outputs + requests

    def _state_document(self, key: bytes, record: PaymentRecord, now: datetime) -> Output:
        return Output(self.topics.state, key, document(key.decode(), record, self.schedule, now), [_JSON])

    def _quarantine(self, stored: PaymentRecord | None, value: bytes, key: bytes, headers: Any, size: int,
                    state: State[str, bytes], now: datetime) -> list[Output]:
        """The record would pass the hard cap: keep the last stored one, flagged, and copy the input to the DLQ
        (a person decides); nothing derived from the record that was not kept is emitted; the partition and the
        worker go on."""
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


def stream_id(settings: Settings, conf: ProcessorSettings) -> str:
    """Quix Streams' documented stream id of concatenated topics: their names, sorted, joined by ``--``."""
    return "--".join(sorted({settings.topics.inbox, settings.topics.fetch_results, conf.inputs_topic()}))


def internal_topics(settings: Settings, conf: ProcessorSettings) -> list[tuple[str, dict[str, str]]]:
    """The processor's internal topics with their own configuration (:mod:`processors.internal_topics`)."""
    return [(conf.inputs_topic(), {"retention.ms": str(settings.topics.inbox_retention_ms)}),
            (changelog_topic(conf.app_id, stream_id(settings, conf)), {"cleanup.policy": "compact"})]


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

    # One stateful stage over the three inputs, with one store: deliveries and fetch results arrive keyed by
    # their payment (ingest.providers.routing), redirected inputs keyed by theirs.
    merged = (app.dataframe(topics[names.inbox]).concat(app.dataframe(topics[names.fetch_results]))
              .concat(app.dataframe(topics[names.inputs])))
    route(merged.apply(stages.process, stateful=True, metadata=True, expand=True))
    return app
