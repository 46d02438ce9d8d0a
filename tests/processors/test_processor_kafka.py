"""The processor worker on the real broker: inbox and fetch results in, status events / current state / fetch
requests / dead letters out.

One worker (its own topics and app id) serves the module's stories: each uses payment keys of its own and
reads only its own records, then waits until the worker committed everything it was given, so a late or
extra output shows. The SIGKILL tests are in test_processor_sigkill.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import orjson
import pytest
from processor_harness import (
    EXPECTED_LIFECYCLE,
    Worker,
    adyen_item,
    adyen_lifecycle,
    delivery_id_in,
    drop_topics,
    envelope,
    events_of,
    fresh_settings,
    inbox_partition,
    processor_settings,
    produce,
    read_all,
    read_until,
    send_inbox,
    start_worker,
    summary,
    wait_drained,
)

from paystream.config import Settings
from paystream.dlq import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_REASON,
    FIRST_FAILURE_AT,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from processors.settings import ProcessorSettings
from schemas.envelopes import FetchRequest, FetchResult, from_rfc3339, to_rfc3339
from schemas.event import EVENT_CONTENT_TYPE, event_id, load_schema, parse_time

pytestmark = pytest.mark.kafka

EVENT_SCHEMA = load_schema("payment-status-event")
STALE_GAP_S = 60  # the default schedule's first poll
CONTENT_TYPE = ("content-type", EVENT_CONTENT_TYPE.encode())


# --- inputs -------------------------------------------------------------------------------------------


def keyed(key: str, records: list[Any]) -> list[Any]:
    return [record for record in records if record.key == key.encode()]


def at_least(n: int, key: str) -> Callable[[list[Any]], bool]:
    return lambda records: len(keyed(key, records)) >= n


def unique() -> str:
    return uuid.uuid4().hex[:8]


# --- the module's worker ---------------------------------------------------------------------------------


@dataclass
class Running:
    settings: Settings
    conf: ProcessorSettings
    worker: Worker

    async def until(self, topic: str, done: Callable[[list[Any]], bool]) -> list[Any]:
        records = await read_until(self.settings, topic, done, timeout_s=60, worker=self.worker)
        assert done(records), f"{topic}: not there after 60 s\n{self.worker.log_tail()}"
        return records

    async def settled(self, topic: str) -> list[Any]:
        """Once the worker committed every input so far: all of ``topic``."""
        lag = await wait_drained(self.settings, self.conf, [self.settings.topics.inbox,
                                                            self.settings.topics.fetch_results,
                                                            self.conf.inputs_topic()], timeout_s=60)
        assert not lag, lag + "\n" + self.worker.log_tail()
        return await read_all(self.settings, topic)


@pytest.fixture(scope="module")
async def running(base_settings: Settings, kafka_bootstrap: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    settings = await fresh_settings(base_settings)
    conf = processor_settings()
    worker = start_worker(settings, conf, tmp_path_factory.mktemp("processor"))
    yield Running(settings, conf, worker)
    code = worker.stop()
    await drop_topics(settings, conf.app_id)
    assert code == 0, worker.log_tail()


# --- stories ---------------------------------------------------------------------------------------------


async def test_pushes_become_valid_status_events_in_sequence(running: Running) -> None:
    settings = running.settings
    payment = f"P{unique()}"
    key = f"adyen:main:payment:{payment}"
    sent_ms = int(time.time() * 1000)
    deliveries = adyen_lifecycle(payment, settings.topics.partitions)
    await send_inbox(settings, deliveries)
    records = keyed(key, await running.until(settings.topics.status, at_least(3, key)))
    events = events_of(records)
    assert [summary(e) for e in events] == EXPECTED_LIFECYCLE, running.worker.log_tail()
    assert [e["data"]["sequence"] for e in events] == [1, 2, 3]
    assert [e["data"]["previous_status"] for e in events] == [None, "authorized", "captured"]
    assert [e["id"] for e in events] == [event_id(key, n) for n in (1, 2, 3)]
    for record, event, delivery in zip(records, events, deliveries, strict=True):
        jsonschema.validate(event, EVENT_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        assert event["data"]["source"] == "push"
        assert parse_time(event["data"]["observed_at"]) == from_rfc3339(delivery.received_at)
        assert list(record.headers) == [CONTENT_TYPE]
        # The record's time is when paystream emitted it (not the inbox record's time): after the event was
        # built (emitted_at, the same host's clock) and after the test produced the delivery.
        emitted_ms = int(parse_time(event["data"]["emitted_at"]).timestamp() * 1000)
        assert record.timestamp >= max(emitted_ms, sent_ms), (record.timestamp, emitted_ms, sent_ms)
    assert keyed(key, await running.settled(settings.topics.status)) == records  # and nothing more


async def test_malformed_records_and_an_unknown_provider_word_go_to_the_dlq_and_processing_continues(
    running: Running,
) -> None:
    settings, run = running.settings, unique()
    partitions = settings.topics.partitions
    payment = f"D{run}"
    lifecycle = adyen_lifecycle(payment, partitions)
    partition = inbox_partition("adyen", "main", lifecycle[0].delivery_id, partitions)
    # The malformed record and the unknown word sit in the payment's inbox partition, before its deliveries.
    garbage_key = delivery_id_in(partition, partitions, "adyen", "main", f"garbage-{run}")
    unknown = envelope("adyen", "main", delivery_id_in(partition, partitions, "adyen", "main", f"U{run}:DONATION"),
                       adyen_item(f"U{run}", "DONATION", 5))
    garbage = (f"adyen:main:{garbage_key}".encode(), b"not json at all")
    await produce(settings, settings.topics.inbox, [garbage])
    await send_inbox(settings, [unknown, *lifecycle])
    # The reconcile stage too: an unreadable record on its input topic (keyed like a payment).
    broken_input = (f"adyen:main:payment:B{run}".encode(), b'{"v": 1, "kind": "teleport"}')
    await produce(settings, running.conf.inputs_topic(), [broken_input])
    key = f"adyen:main:payment:{payment}"
    status = await running.until(settings.topics.status, at_least(3, key))
    assert [summary(e) for e in events_of(keyed(key, status))] == EXPECTED_LIFECYCLE, running.worker.log_tail()

    dead = [r for r in await running.settled(settings.topics.dlq)
            if r.key in (garbage[0], unknown.key, broken_input[0])]
    by_key = {record.key: record for record in dead}
    assert len(dead) == len(by_key) == 3, [(r.key, dict(r.headers)) for r in dead]
    for record, value, source, error_class, reason in (
        (by_key[garbage[0]], garbage[1], settings.topics.inbox, b"NormalizationError", b"malformed_envelope"),
        (by_key[unknown.key], unknown.to_bytes(), settings.topics.inbox, b"UnknownProviderStatus",
         b"unknown_event_type"),
        (by_key[broken_input[0]], broken_input[1], running.conf.inputs_topic(), b"NormalizationError",
         b"malformed_payment_input"),
    ):
        headers = dict(record.headers)
        assert record.value == value  # unchanged
        assert (headers[ERROR_CLASS], headers[ERROR_REASON], headers[SOURCE_TOPIC]) == (
            error_class, reason, source.encode())
        assert headers[ERROR_MESSAGE]
        assert int(headers[SOURCE_PARTITION]) in range(settings.topics.partitions)
        assert int(headers[SOURCE_OFFSET]) >= 0
        first_failure = from_rfc3339(headers[FIRST_FAILURE_AT].decode())
        assert headers[FIRST_FAILURE_AT].endswith(b"Z")
        assert abs(datetime.now(UTC) - first_failure) < timedelta(minutes=5)
    assert b"DONATION" in dict(by_key[unknown.key].headers)[ERROR_MESSAGE]
    # The two inbox dead letters precede the payment's deliveries in their partition: every delivery after
    # them was processed, once.
    assert int(dict(by_key[garbage[0]].headers)[SOURCE_PARTITION]) == partition
    assert len(keyed(key, await read_all(settings, settings.topics.status))) == 3


async def test_a_thin_push_asks_for_a_fetch_and_a_stale_poll_and_the_results_move_the_chain(
    running: Running,
) -> None:
    """A thin IPN (delivered twice): one fetch now and one stale poll a minute ahead. The fetch finds the charge
    authorized (a poll observation, news); the armed poll, due before the news' own first poll would be,
    stands for it. When that poll's result comes back the chain moves on to poll 2, counted from the news."""
    settings, run = running.settings, unique()
    charge = f"S01-{run}-C1"
    key = f"amazon_pay:eu:charge:{charge}"
    ipn = {"NotificationVersion": "V2", "ObjectType": "CHARGE", "ObjectId": charge, "NotificationId": f"n-{run}",
           "NotificationType": "STATE_CHANGE"}
    sns = {"Type": "Notification", "MessageId": f"sns-{run}", "Message": orjson.dumps(ipn).decode()}
    thin = envelope("amazon_pay", "eu", f"sns-{run}", orjson.dumps(sns), kind="thin")
    await send_inbox(settings, [thin, thin])  # SNS redelivers: the second copy asks for nothing
    first = [FetchRequest.from_bytes(r.value)
             for r in keyed(key, await running.until(settings.topics.fetch_requests, at_least(2, key)))]
    thin_push, stale = first
    assert (thin_push.reason, thin_push.request_id, thin_push.evidence_id) == (
        "thin_push", f"sns-{run}:fetch", f"sns-{run}")
    # due now, and requested when the IPN reached ingest (the fetcher coalesces later copies against that)
    assert thin_push.requested_at == thin.received_at <= thin_push.not_before
    # The charge now waits for what the fetch finds: the first stale poll is armed a minute ahead.
    assert (stale.reason, stale.attempt) == ("stale", 1)
    assert stale.request_id.startswith(f"{key}:stale:") and stale.request_id.endswith(":1")
    gap = from_rfc3339(stale.not_before) - from_rfc3339(stale.requested_at)
    assert abs(gap - timedelta(seconds=STALE_GAP_S)) <= timedelta(milliseconds=1), gap  # both cut to ms

    def fetched(fetch_id: str, request: FetchRequest) -> FetchResult:
        body = {"chargeId": charge, "chargeAmount": {"amount": "25.00", "currencyCode": "EUR"},
                "statusDetails": {"state": "Authorized", "lastUpdatedTimestamp": "20240501T100000Z"}}
        return FetchResult(payment_key=key, provider="amazon_pay", account="eu", object_type="charge",
                           object_id=charge, fetch_id=fetch_id, request_id=request.request_id, reason=request.reason,
                           fetched_at=to_rfc3339(datetime.now(UTC)), outcome="ok", http_status=200,
                           body=orjson.dumps(body), attempt=request.attempt)

    news = fetched(f"f-{run}-1", thin_push)
    await produce(settings, settings.topics.fetch_results, [(news.key, news.to_bytes())])
    (record,) = keyed(key, await running.until(settings.topics.status, at_least(1, key)))
    event = orjson.loads(record.value)
    assert (event["data"]["status"], event["data"]["amount"], event["data"]["source"]) == ("authorized", 2500, "poll")
    assert event["data"]["evidence"] == [f"f-{run}-1"]
    assert [FetchRequest.from_bytes(r.value) for r in keyed(key, await running.settled(
        settings.topics.fetch_requests))] == first  # the armed poll stands for the news' first poll

    polled = fetched(f"f-{run}-2", stale)  # the stale poll fired: nothing new at the provider
    await produce(settings, settings.topics.fetch_results, [(polled.key, polled.to_bytes())])
    requests = [FetchRequest.from_bytes(r.value)
                for r in keyed(key, await running.until(settings.topics.fetch_requests, at_least(3, key)))]
    since = from_rfc3339(news.fetched_at)
    second = requests[2]
    assert (second.reason, second.attempt, second.request_id, second.not_before) == (
        "stale", 2, f"{key}:stale:{since.timestamp():.6f}:2",
        to_rfc3339(since + timedelta(seconds=STALE_GAP_S + 300)))
    # Nothing more: the unchanged charge emitted no event, and no other request followed.
    assert len(keyed(key, await running.settled(settings.topics.fetch_requests))) == 3
    assert len(keyed(key, await read_all(settings, settings.topics.status))) == 1


async def test_a_sync_observation_and_a_poll_registration(running: Running) -> None:
    settings, run = running.settings, unique()
    pi = f"pi_{run}"
    key = f"stripe:us:payment_intent:{pi}"
    body = {"provider": "stripe", "account": "us", "object_type": "payment_intent", "object_id": pi,
            "order_ref": f"o-{run}", "state": {"provider_status": "requires_capture", "amount": 900, "currency": "USD"},
            "register_poll": True, "request_id": f"req-{run}"}
    sync = envelope("stripe", "us", f"sync:req-{run}", orjson.dumps(body), kind="sync")
    await send_inbox(settings, [sync])
    (record,) = keyed(key, await running.until(settings.topics.status, at_least(1, key)))
    event = orjson.loads(record.value)
    assert (event["data"]["status"], event["data"]["source"], event["data"]["order_ref"], event["data"]["amount"]) \
        == ("authorized", "sync", f"o-{run}", 900)
    requests = [FetchRequest.from_bytes(r.value)
                for r in keyed(key, await running.settled(settings.topics.fetch_requests))]
    since = from_rfc3339(sync.received_at)
    # The authorized payment awaits news (a stale poll from its receipt), and the checkout asked for a poll now.
    assert [(r.reason, r.request_id, r.not_before, r.attempt) for r in requests] == [
        ("stale", f"{key}:stale:{since.timestamp():.6f}:1", to_rfc3339(since + timedelta(seconds=STALE_GAP_S)), 1),
        ("registered", f"sync:req-{run}:registered", requests[1].requested_at, 1),
    ]


async def test_the_state_topic_holds_the_last_event_of_every_payment(running: Running) -> None:
    """payments.state.v1: per payment, the latest document embeds the highest-sequence status event as
    emitted, with the first-seen time (RFC 3339 UTC, constant per payment, no later than the payment's first
    event and no earlier than the test produced its first input) and JSON content type."""
    settings, run = running.settings, unique()
    started = datetime.now(UTC) - timedelta(milliseconds=1)  # to_rfc3339 truncates to milliseconds
    lifecycles = {f"adyen:main:payment:ST{run}{n}": adyen_lifecycle(f"ST{run}{n}", settings.topics.partitions)
                  for n in range(4)}
    # Payment 0 ends after one step, 1 after two, 2 and 3 after three.
    sent = [delivery for n, lifecycle in enumerate(lifecycles.values()) for delivery in lifecycle[: n + 1]]
    await send_inbox(settings, sent)
    wanted = {key: min(n + 1, 3) for n, key in enumerate(lifecycles)}
    await running.until(settings.topics.status, lambda records: all(
        len(keyed(key, records)) >= count for key, count in wanted.items()))
    status = [r for r in await running.settled(settings.topics.status) if r.key.decode() in wanted]
    state = [r for r in await read_all(settings, settings.topics.state) if r.key.decode() in wanted]

    assert await cleanup_policy(settings, settings.topics.state) == "compact"
    for key, count in wanted.items():
        events = keyed(key, status)
        highest = max(events, key=lambda r: orjson.loads(r.value)["data"]["sequence"])
        assert orjson.loads(highest.value)["data"]["sequence"] == count
        docs = [orjson.loads(r.value) for r in keyed(key, state)]
        latest = docs[-1]
        assert latest["event"] == orjson.loads(highest.value)  # the very event, as emitted
        assert latest["status"] == latest["event"]["data"]["status"] and latest["payment_key"] == key
        # every event of the payment was the latest in some document, in order
        assert [doc["event"]["data"]["sequence"] for doc in docs if doc["event"]] == list(range(1, count + 1))
        first_seen_values = {doc["first_seen_at"] for doc in docs}
        assert len(first_seen_values) == 1, first_seen_values  # when paystream FIRST heard of it: constant
        (raw,) = first_seen_values
        first_seen = parse_time(raw)
        first_event = orjson.loads(min(events, key=lambda r: r.offset).value)
        assert started <= first_seen <= parse_time(first_event["data"]["emitted_at"])
        assert first_seen >= parse_time(first_event["data"]["observed_at"])  # a push is seen after its receipt
        assert dict(keyed(key, state)[-1].headers)["content-type"] == b"application/json"


async def cleanup_policy(settings: Settings, topic: str) -> str:
    from confluent_kafka.admin import AdminClient, ConfigResource

    from processors.kafka_client import connection_config

    def describe() -> str:
        admin = AdminClient({**connection_config(settings.kafka, client_id="test-admin").as_librdkafka_dict(),
                         "log_level": 4})
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([resource])[resource].result(10)
        return str(configs["cleanup.policy"].value)

    return await asyncio.to_thread(describe)
