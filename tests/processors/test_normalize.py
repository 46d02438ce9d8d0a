"""Normalize (pure): inbox envelopes and fetch results → inputs about single payments (observations, fetch
requests, polled markers), each with the dedupe id the reconcile stage uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from paystream.config import AccountConfig, Settings
from paystream.errors import NormalizationError, UnknownProviderStatus
from processors.normalize import Normalizer, Unparseable
from processors.payment_inputs import FetchInput, ObservationInput, PaymentInput, PolledInput
from schemas.envelopes import FetchResult, InboxEnvelope, ReplayMark
from schemas.status import PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ADYEN_ITEM = {"pspReference": "P1", "merchantAccountCode": "M", "merchantReference": "o-1",
              "amount": {"currency": "EUR", "value": 500}, "eventCode": "AUTHORISATION", "success": "true",
              "eventDate": "2024-05-01T10:00:00+00:00"}


def inbox(provider: str, kind: str, body: bytes, delivery: str = "d-1", **extra: Any) -> InboxEnvelope:
    return InboxEnvelope(provider=provider, account="acct", delivery_id=delivery, kind=kind,  # type: ignore[arg-type]
                         received_at="2024-05-01T11:00:00.000Z", body=body, **extra)


def normalizer(**accounts: dict[str, AccountConfig]) -> Normalizer:
    return Normalizer(Settings(accounts=accounts))  # type: ignore[arg-type]


def observations(inputs: list[PaymentInput]) -> list[ObservationInput]:
    return [item for item in inputs if isinstance(item, ObservationInput)]


def fetches(inputs: list[PaymentInput]) -> list[FetchInput]:
    return [item for item in inputs if isinstance(item, FetchInput)]


def test_event_push_becomes_a_push_observation_keyed_by_payment() -> None:
    (record,) = normalizer().inbox(inbox("adyen", "event", orjson.dumps(ADYEN_ITEM)), NOW)
    assert isinstance(record, ObservationInput)
    assert (record.payment_key, record.observation.source, record.observation.evidence_id) == (
        "adyen:acct:payment:P1", Source.PUSH, "d-1")
    assert record.observation.observed_at == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
    assert record.dedupe_id == "d-1#0"  # the same delivery again gives the same dedupe id


def test_each_observation_of_a_delivery_has_its_own_dedupe_id() -> None:
    batch = {"notificationItems": [{"NotificationRequestItem": ADYEN_ITEM},
                                   {"NotificationRequestItem": {**ADYEN_ITEM, "pspReference": "P2"}}]}
    records = observations(normalizer().inbox(inbox("adyen", "event", orjson.dumps(batch)), NOW))
    assert [r.dedupe_id for r in records] == ["d-1#0", "d-1#1"]


def test_replayed_push_is_a_replay_observation() -> None:
    mark = ReplayMark(replayed_at="2024-05-02T00:00:00Z", origin="s3://b/k#1")
    (record,) = observations(normalizer().inbox(inbox("adyen", "event", orjson.dumps(ADYEN_ITEM), replay=mark),
                                                NOW))
    assert record.observation.source is Source.REPLAY
    assert record.dedupe_id is None  # replays re-apply even after a state wipe


def test_thin_push_becomes_a_fetch_request_not_a_status() -> None:
    ipn = {"ObjectType": "CHARGE", "ObjectId": "S01-9", "NotificationType": "STATE_CHANGE"}
    result = normalizer().inbox(inbox("amazon_pay", "thin", orjson.dumps({"Message": orjson.dumps(ipn).decode()})),
                                NOW)
    (item,) = result
    assert isinstance(item, FetchInput)
    request = item.request
    assert (request.payment_key, request.reason, request.request_id, request.evidence_id) == (
        "amazon_pay:acct:charge:S01-9", "thin_push", "d-1:fetch", "d-1")
    assert item.dedupe_id == request.request_id


def test_hints_are_never_dropped_at_intake_and_carry_no_dedupe_id() -> None:
    # Hints used to pass a wall-clock token bucket here, which dropped most of them after any catch-up; the
    # fetcher now coalesces them per object and runs them within the account's rate.
    norm = normalizer(mollie={"acct": AccountConfig(hint_rate_per_s=1.0, hint_burst=2)})
    results = [norm.inbox(inbox("mollie", "hint", b"id=tr_1", f"h-{n}"), NOW) for n in range(50)]
    assert [len(fetches(r)) for r in results] == [1] * 50
    assert {(item.request.reason, item.dedupe_id) for r in results for item in fetches(r)} == {("hint", None)}


def test_a_hint_is_requested_when_it_was_received_not_when_it_was_processed() -> None:
    # The fetcher coalesces a hint with a fetch sent after requested_at; stamping processing time instead
    # made every later copy of one delivery look newer than the fetch it had already caused.
    (item,) = normalizer().inbox(inbox("mollie", "hint", b"id=tr_1"), NOW)
    assert isinstance(item, FetchInput)
    received, processed = "2024-05-01T11:00:00.000Z", "2024-05-01T12:00:00.000Z"
    assert (item.request.requested_at, item.request.not_before) == (received, processed)


def sync_body(**overrides: Any) -> bytes:
    body = {"provider": "stripe", "account": "acct", "object_type": "payment_intent", "object_id": "pi_1",
            "order_ref": "o-1", "state": {"provider_status": "succeeded", "amount": 900, "currency": "usd"},
            "request_id": "r-1"}
    body.update(overrides)
    return orjson.dumps(body)


def test_sync_state_becomes_a_sync_observation() -> None:
    (record,) = observations(normalizer().inbox(inbox("stripe", "sync", sync_body()), NOW))
    obs = record.observation
    assert (obs.status, obs.source, obs.amount, obs.currency, obs.order_ref) == (
        PaymentStatus.CAPTURED, Source.SYNC, 900, "USD", "o-1")


def test_sync_registration_becomes_a_registered_fetch() -> None:
    result = normalizer().inbox(inbox("stripe", "sync", sync_body(state=None, register_poll=True)), NOW)
    (item,) = result
    assert isinstance(item, FetchInput)
    assert (item.request.reason, item.request.payment_key) == ("registered", "stripe:acct:payment_intent:pi_1")


def test_sync_with_unknown_word_is_not_guessed() -> None:
    with pytest.raises(UnknownProviderStatus):
        normalizer().inbox(inbox("stripe", "sync", sync_body(state={"provider_status": "paid"})), NOW)


def test_sync_body_for_another_account_is_refused() -> None:
    with pytest.raises(NormalizationError, match="envelope"):
        normalizer().inbox(inbox("stripe", "sync", sync_body(account="other")), NOW)


def test_standard_push_uses_the_account_status_map() -> None:
    norm = normalizer(standard={"acct": AccountConfig(status_map={"payment.paid": "captured"})})
    body = orjson.dumps({"type": "payment.paid", "timestamp": "2024-05-01T10:00:00Z", "data": {"id": "pay_1"}})
    (record,) = observations(norm.inbox(inbox("standard", "event", body), NOW))
    assert record.observation.status is PaymentStatus.CAPTURED


def test_unknown_provider_is_a_normalization_error() -> None:
    with pytest.raises(NormalizationError, match="no parser"):
        normalizer().inbox(inbox("paypal", "event", b"{}"), NOW)


def fetch_result(outcome: str = "ok", body: bytes = b"", reason: str = "stale") -> FetchResult:
    return FetchResult(payment_key="mollie:acct:payment:tr_1", provider="mollie", account="acct",
                       object_type="payment", object_id="tr_1", fetch_id="f-1", request_id="r-1",
                       reason=reason, fetched_at="2024-05-01T11:30:00.000Z", outcome=outcome,  # type: ignore[arg-type]
                       http_status=200, body=body)


def test_fetch_result_is_a_poll_observation_carrying_the_fetch_reason() -> None:
    payment = {"resource": "payment", "id": "tr_1", "status": "open", "createdAt": "2024-05-01T10:00:00Z",
               "amount": {"value": "1.00", "currency": "EUR"}}
    record, polled = normalizer().fetch_result(fetch_result(body=orjson.dumps(payment)))
    assert isinstance(record, ObservationInput) and isinstance(polled, PolledInput)
    assert (record.observation.source, record.observation.evidence_id, record.fetch_reason, record.dedupe_id) == (
        Source.POLL, "f-1", "stale", None)
    # The polled marker follows what the poll observed: the chain moves on from the state the poll left.
    assert (polled.payment_key, polled.request_id, polled.outcome) == ("mollie:acct:payment:tr_1", "r-1", "ok")


def test_failed_fetch_observes_nothing_but_still_moves_the_poll_chain() -> None:
    (polled,) = normalizer().fetch_result(fetch_result(outcome="not_found"))
    assert isinstance(polled, PolledInput) and polled.outcome == "not_found"


def test_an_unparseable_ok_body_still_moves_the_poll_chain_and_names_the_error() -> None:
    # Issue 18: the marker that moves the chain on used to go to the DLQ with the body, ending the polling.
    result = normalizer().fetch_result(fetch_result(body=b'{"resource": "payment", "id": "tr_1"}'))
    assert isinstance(result, Unparseable)
    assert (result.polled.request_id, result.polled.outcome) == ("r-1", "unparseable")
    assert isinstance(result.error, NormalizationError)
