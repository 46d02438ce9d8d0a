"""The processor worker on the real broker: inbox and fetch results in, status events / fetch requests /
dead letters out."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from processor_harness import (
    Worker,
    delivery_id_in,
    envelope,
    events_of,
    inbox_partition,
    processor_settings,
    produce,
    read_until,
    send_inbox,
    start_worker,
    wait_drained,
)

from paystream.config import Settings
from paystream.dlq import ERROR_CLASS, ERROR_REASON, FIRST_FAILURE_AT, SOURCE_OFFSET, SOURCE_TOPIC
from schemas.envelopes import FetchRequest, FetchResult, to_rfc3339
from schemas.event import load_schema

pytestmark = pytest.mark.kafka

EVENT_SCHEMA = load_schema("payment-status-event")


def adyen_item(psp: str, code: str, value: int, *, original: str | None = None, minute: int = 0,
               success: str = "true") -> bytes:
    item: dict[str, Any] = {"pspReference": psp, "merchantAccountCode": "M", "merchantReference": f"order-{psp}",
                            "amount": {"currency": "EUR", "value": value}, "eventCode": code, "success": success,
                            "eventDate": f"2024-05-01T10:{minute:02d}:00+00:00"}
    if original:
        item["originalReference"] = original
    return orjson.dumps(item)


def adyen_lifecycle(payment: str, *, one_partition_of: int | None = None) -> list[Any]:
    """Authorise, capture in full, refund part: three real transitions. With ``one_partition_of`` (the inbox's
    partition count) all three deliveries land in one inbox partition, so their order survives a restart."""
    def delivery_id(step: str) -> str:
        if one_partition_of is None:
            return f"{payment}:{step}"
        partition = inbox_partition("adyen", "main", payment, one_partition_of)
        return delivery_id_in(partition, one_partition_of, "adyen", "main", f"{payment}:{step}")

    return [
        envelope("adyen", "main", delivery_id("AUTH"), adyen_item(payment, "AUTHORISATION", 1000, minute=1)),
        envelope("adyen", "main", delivery_id("CAP"), adyen_item(f"{payment}C", "CAPTURE", 1000, original=payment,
                                                                 minute=2)),
        envelope("adyen", "main", delivery_id("REF"), adyen_item(f"{payment}R", "REFUND", 300, original=payment,
                                                                 minute=3)),
    ]


EXPECTED_LIFECYCLE = [("authorized", 1000, 0, 0), ("captured", 1000, 1000, 0), ("partially_refunded", 1000, 1000, 300)]


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (data["status"], data["amount"], data["captured_amount"], data["refunded_amount"])


def by_payment(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["subject"], []).append(event)
    for group in grouped.values():
        group.sort(key=lambda e: e["data"]["sequence"])
    return grouped


def count_at_least(n: int) -> Any:
    return lambda records: len(records) >= n


async def send_in_order(settings: Settings, worker: Worker, deliveries: list[Any], copies: int = 1) -> None:
    """Inbox records are keyed by delivery id, so two deliveries of one payment may sit in different
    partitions: wait for each delivery's status event before sending the next to keep their order."""
    for index, delivery in enumerate(deliveries, start=1):
        await send_inbox(settings, [delivery] * copies)
        await read_until(settings, settings.topics.status, count_at_least(index), worker=worker)


@pytest.fixture
async def worker(kafka_settings: Settings, tmp_path: Path) -> AsyncIterator[Worker]:
    running = start_worker(kafka_settings, processor_settings(), tmp_path)
    yield running
    code = running.stop()
    assert code == 0, running.log_tail()


async def test_pushes_become_valid_status_events_in_sequence(kafka_settings: Settings, worker: Worker) -> None:
    await send_in_order(kafka_settings, worker, adyen_lifecycle("P100"))
    events = events_of(await read_until(kafka_settings, kafka_settings.topics.status, count_at_least(3),
                                        worker=worker))
    assert [summary(e) for e in by_payment(events)["adyen:main:payment:P100"]] == EXPECTED_LIFECYCLE, \
        worker.log_tail()
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert [e["data"]["sequence"] for e in events] == [1, 2, 3]
    assert events[-1]["data"]["previous_status"] == "captured"
    assert events[0]["data"]["source"] == "push"


async def test_malformed_record_and_unknown_word_go_to_the_dlq_and_processing_continues(
    kafka_settings: Settings, worker: Worker,
) -> None:
    unknown = envelope("adyen", "main", "U1:DONATION", adyen_item("U1", "DONATION", 5))
    await produce(kafka_settings, kafka_settings.topics.inbox, [(b"adyen:main:garbage", b"not json at all")])
    await send_inbox(kafka_settings, [unknown, *adyen_lifecycle("P200")[:1]])
    dead = await read_until(kafka_settings, kafka_settings.topics.dlq, count_at_least(2), worker=worker)
    status = events_of(await read_until(kafka_settings, kafka_settings.topics.status, count_at_least(1),
                                        worker=worker))
    assert [summary(e) for e in status] == EXPECTED_LIFECYCLE[:1], worker.log_tail()
    by_class = {dict(r.headers)[ERROR_CLASS]: r for r in dead}
    assert set(by_class) == {b"NormalizationError", b"UnknownProviderStatus"}
    malformed, unknown_word = by_class[b"NormalizationError"], by_class[b"UnknownProviderStatus"]
    assert (malformed.key, malformed.value) == (b"adyen:main:garbage", b"not json at all")
    assert unknown_word.value == unknown.to_bytes()
    headers = dict(unknown_word.headers)
    assert headers[ERROR_REASON] == b"unknown_provider_status"
    assert headers[SOURCE_TOPIC] == kafka_settings.topics.inbox.encode()
    assert int(headers[SOURCE_OFFSET]) >= 0 and headers[FIRST_FAILURE_AT].endswith(b"Z")


async def test_thin_push_asks_for_a_fetch_and_the_result_is_a_poll_observation(
    kafka_settings: Settings, worker: Worker,
) -> None:
    ipn = {"NotificationVersion": "V2", "ObjectType": "CHARGE", "ObjectId": "S01-C1", "NotificationId": "n1"}
    sns = {"Type": "Notification", "MessageId": "sns-1", "Message": orjson.dumps(ipn).decode()}
    await send_inbox(kafka_settings, [envelope("amazon_pay", "eu", "sns-1", orjson.dumps(sns), kind="thin")])
    (record,) = await read_until(kafka_settings, kafka_settings.topics.fetch_requests, count_at_least(1), worker=worker)
    request = FetchRequest.from_bytes(record.value)
    assert (request.payment_key, request.reason, request.evidence_id) == (
        "amazon_pay:eu:charge:S01-C1", "thin_push", "sns-1")
    charge = {"chargeId": "S01-C1", "chargeAmount": {"amount": "25.00", "currencyCode": "EUR"},
              "statusDetails": {"state": "Authorized", "lastUpdatedTimestamp": "20240501T100000Z"}}
    result = FetchResult(payment_key=request.payment_key, provider="amazon_pay", account="eu", object_type="charge",
                         object_id="S01-C1", fetch_id="f-1", request_id=request.request_id, reason="thin_push",
                         fetched_at=to_rfc3339(datetime.now(UTC)),
                         outcome="ok", http_status=200, body=orjson.dumps(charge))
    await produce(kafka_settings, kafka_settings.topics.fetch_results, [(result.key, result.to_bytes())])
    (event,) = events_of(await read_until(kafka_settings, kafka_settings.topics.status, count_at_least(1),
                                          worker=worker))
    assert (event["data"]["status"], event["data"]["amount"], event["data"]["source"]) == ("authorized", 2500, "poll")
    assert event["data"]["evidence"] == ["f-1"]


async def test_sync_observation_and_poll_registration(kafka_settings: Settings, worker: Worker) -> None:
    body = {"provider": "stripe", "account": "us", "object_type": "payment_intent", "object_id": "pi_7",
            "order_ref": "o-7", "state": {"provider_status": "requires_capture", "amount": 900, "currency": "USD"},
            "register_poll": True, "request_id": "req-7"}
    await send_inbox(kafka_settings, [envelope("stripe", "us", "sync:req-7", orjson.dumps(body), kind="sync")])
    (event,) = events_of(await read_until(kafka_settings, kafka_settings.topics.status, count_at_least(1),
                                          worker=worker))
    assert (event["data"]["status"], event["data"]["source"], event["data"]["order_ref"]) == (
        "authorized", "sync", "o-7")
    (record,) = await read_until(kafka_settings, kafka_settings.topics.fetch_requests, count_at_least(1), worker=worker)
    assert FetchRequest.from_bytes(record.value).reason == "registered"



def stripe_event(pi: str, event_type: str, status: str, at: int, received: int = 0) -> Any:
    body = {"id": f"evt_{pi}_{at}", "object": "event", "type": event_type, "created": 1714550000 + at,
            "data": {"object": {"id": pi, "object": "payment_intent", "amount": 2000, "amount_received": received,
                                "currency": "eur", "status": status, "created": 1714550000,
                                "latest_charge": f"ch_{pi}"}}}
    return envelope("stripe", "us", body["id"], orjson.dumps(body))  # type: ignore[arg-type]


def stripe_lifecycle(pi: str) -> list[Any]:
    return [stripe_event(pi, "payment_intent.created", "requires_payment_method", 1),
            stripe_event(pi, "payment_intent.amount_capturable_updated", "requires_capture", 2),
            stripe_event(pi, "payment_intent.succeeded", "succeeded", 3, received=2000)]


def assert_clean_sequences(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per payment: sequence 1..n without gaps or repeats, and every event a real change."""
    grouped = by_payment(events)
    for key, group in grouped.items():
        assert [e["data"]["sequence"] for e in group] == list(range(1, len(group) + 1)), key
        summaries = [summary(e) for e in group]
        assert all(a != b for a, b in itertools.pairwise(summaries)), (key, summaries)
    return grouped


async def test_duplicates_and_shuffled_order_give_one_event_per_transition(
    kafka_settings: Settings, tmp_path: Path,
) -> None:
    conf = processor_settings()
    worker = start_worker(kafka_settings, conf, tmp_path)
    try:
        await send_in_order(kafka_settings, worker, adyen_lifecycle("A1"), copies=3)
        shuffled = [env for payment in ("B1", "B2", "B3") for env in adyen_lifecycle(payment)] * 3
        shuffled += [env for pi in ("pi_S1", "pi_S2") for env in stripe_lifecycle(pi)] * 3
        random.Random(7).shuffle(shuffled)
        await send_inbox(kafka_settings, shuffled)
        lag = await wait_drained(kafka_settings, conf, [kafka_settings.topics.inbox, conf.observations_topic()])
        assert not lag, lag + worker.log_tail()
        events = events_of(await read_until(kafka_settings, kafka_settings.topics.status, lambda r: False,
                                            timeout_s=3, worker=worker))
    finally:
        assert worker.stop() == 0, worker.log_tail()
    grouped = assert_clean_sequences(events)
    assert [summary(e) for e in grouped["adyen:main:payment:A1"]] == EXPECTED_LIFECYCLE
    for payment in ("B1", "B2", "B3"):
        assert summary(grouped[f"adyen:main:payment:{payment}"][-1]) == EXPECTED_LIFECYCLE[-1]
    for pi in ("pi_S1", "pi_S2"):
        assert summary(grouped[f"stripe:us:payment_intent:{pi}"][-1]) == ("captured", 2000, 2000, 0)
    assert len(grouped) == 6


async def test_worker_killed_mid_stream_loses_and_duplicates_nothing(
    kafka_settings: Settings, tmp_path: Path,
) -> None:
    conf = processor_settings()
    payments = [f"K{n}" for n in range(30)]
    lifecycles = [adyen_lifecycle(payment, one_partition_of=kafka_settings.topics.partitions) for payment in payments]
    deliveries = [lifecycle[step] for step in range(3) for lifecycle in lifecycles]  # interleaved
    first, second = deliveries[:45], deliveries[45:]
    worker = start_worker(kafka_settings, conf, tmp_path, "first")
    await send_inbox(kafka_settings, first)
    await read_until(kafka_settings, kafka_settings.topics.status, count_at_least(1), worker=worker)
    worker.kill()
    await send_inbox(kafka_settings, second)
    restarted = start_worker(kafka_settings, conf, tmp_path, "restarted")
    expected = {(f"adyen:main:payment:{p}", seq) for p in payments for seq in (1, 2, 3)}

    def covered(records: list[Any]) -> bool:
        return {(e["subject"], e["data"]["sequence"]) for e in events_of(records)} >= expected

    try:
        records = await read_until(kafka_settings, kafka_settings.topics.status, covered, worker=restarted)
        # then let anything still in flight arrive, so a late duplicate would be seen
        lag = await wait_drained(kafka_settings, conf, [kafka_settings.topics.inbox, conf.observations_topic()],
                                 timeout_s=20)
        events = events_of(await read_until(kafka_settings, kafka_settings.topics.status, lambda r: False,
                                            timeout_s=3, worker=restarted))
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    assert len(events) >= len(records)
    assert {(e["subject"], e["data"]["sequence"]) for e in events} == expected
    # A batch in flight when the worker died may be emitted again: same id, same content.
    by_id: dict[str, tuple[Any, ...]] = {}
    for event in events:
        assert by_id.setdefault(event["id"], summary(event)) == summary(event)
        assert (event["subject"], event["data"]["sequence"]) in expected
    assert len(by_id) == len(expected)
    for payment in payments:
        final = max((e for e in events if e["subject"] == f"adyen:main:payment:{payment}"),
                    key=lambda e: e["data"]["sequence"])
        assert summary(final) == EXPECTED_LIFECYCLE[-1]
    # and the restarted worker committed everything: no partition stalled behind a dropped record
    assert lag == "", lag
