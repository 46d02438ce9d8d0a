"""Stripe parser: events and fetched PaymentIntents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.stripe import parse as stripe
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import fold
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CREATED = 1714560000


def intent(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "pi_1", "object": "payment_intent", "amount": 2000, "amount_received": 0,
            "currency": "eur", "status": status, "created": CREATED, "latest_charge": "ch_1",
            "metadata": {"order_ref": "order-9"}, **extra}


def charge(**extra: Any) -> dict[str, Any]:
    return {"id": "ch_1", "object": "charge", "amount": 2000, "amount_captured": 2000, "amount_refunded": 0,
            "captured": True, "refunded": False, "currency": "eur", "status": "succeeded",
            "payment_intent": "pi_1", "created": CREATED, **extra}


def event(event_type: str, obj: dict[str, Any], evt: str = "evt_1", at: int = CREATED + 60) -> bytes:
    return orjson.dumps({"id": evt, "object": "event", "type": event_type, "created": at,
                         "data": {"object": obj}})


def push(body: bytes, evidence: str = "evt_1") -> list[Any]:
    return stripe.parse(body, account="acct", source=Source.PUSH, evidence_id=evidence, observed_at=NOW,
                        object_kind="event")


@pytest.mark.parametrize(("status", "expected"), [
    ("requires_payment_method", PaymentStatus.PENDING),
    ("requires_confirmation", PaymentStatus.PENDING),
    ("requires_action", PaymentStatus.REQUIRES_ACTION),
    ("processing", PaymentStatus.PENDING),
    ("requires_capture", PaymentStatus.AUTHORIZED),
    ("canceled", PaymentStatus.CANCELED),
])
def test_payment_intent_statuses_map_explicitly(status: str, expected: PaymentStatus) -> None:
    (obs,) = push(event("payment_intent.created", intent(status)))
    assert (obs.status, obs.object_type, obs.object_id) == (expected, "payment_intent", "pi_1")


def test_succeeded_intent_is_captured_with_the_charge_as_capture_id() -> None:
    (obs,) = push(event("payment_intent.succeeded", intent("succeeded", amount_received=2000)))
    assert (obs.status, dict(obs.captures), obs.currency, obs.order_ref) == (
        PaymentStatus.CAPTURED, {"ch_1": 2000}, "EUR", "order-9")
    assert obs.occurred_at == datetime.fromtimestamp(CREATED + 60, UTC)


def test_payment_failed_event_is_failed_with_decline_code() -> None:
    failed = intent("requires_payment_method", last_payment_error={"code": "card_declined",
                                                                   "decline_code": "insufficient_funds"})
    (obs,) = push(event("payment_intent.payment_failed", failed))
    assert (obs.status, obs.reason_code) == (PaymentStatus.FAILED, "insufficient_funds")


def test_unknown_event_type_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match=r"customer\.created"):
        push(event("customer.created", {"object": "customer", "id": "cus_1"}))


def test_unknown_payment_intent_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus):
        push(event("payment_intent.created", intent("requires_reauthorization")))


def test_refund_event_is_amount_only_under_its_payment_intent() -> None:
    refund = {"id": "re_1", "object": "refund", "amount": 500, "currency": "eur", "status": "succeeded",
              "payment_intent": "pi_1", "charge": "ch_1"}
    (obs,) = push(event("refund.created", refund))
    assert (obs.object_id, obs.status, dict(obs.refunds)) == ("pi_1", None, {"re_1": 500})


def test_charge_refunded_counts_listed_refunds_once_with_refund_events() -> None:
    listed = charge(amount_refunded=500, refunds={"data": [{"id": "re_1", "amount": 500, "status": "succeeded"}]})
    refund = {"id": "re_1", "object": "refund", "amount": 500, "currency": "eur", "status": "succeeded",
              "payment_intent": "pi_1"}
    observations = [*push(event("charge.refunded", listed, "evt_2", CREATED + 120), "evt_2"),
                    *push(event("refund.updated", refund, "evt_3", CREATED + 121), "evt_3"),
                    *push(event("charge.captured", charge(), "evt_1", CREATED + 60))]
    state = fold(observations)
    assert (state.status, state.captured_amount, state.refunded_amount) == (
        PaymentStatus.PARTIALLY_REFUNDED, 2000, 500)


@pytest.mark.parametrize(("dispute_status", "expected"), [
    ("needs_response", PaymentStatus.DISPUTED),
    ("won", PaymentStatus.CAPTURED),
    ("lost", PaymentStatus.CHARGED_BACK),
])
def test_dispute_statuses(dispute_status: str, expected: PaymentStatus) -> None:
    dispute = {"id": "dp_1", "object": "dispute", "status": dispute_status, "charge": "ch_1",
               "payment_intent": "pi_1", "reason": "fraudulent", "currency": "eur"}
    (obs,) = push(event("charge.dispute.closed", dispute))
    assert (obs.status, obs.object_id, obs.reason_code) == (expected, "pi_1", "fraudulent")


def test_uncaptured_charge_is_authorized() -> None:
    (obs,) = push(event("charge.succeeded", charge(captured=False, amount_captured=0)))
    assert (obs.status, dict(obs.captures)) == (PaymentStatus.AUTHORIZED, {})


def test_mandate_is_an_agreement() -> None:
    (obs,) = push(event("mandate.updated", {"id": "mandate_1", "object": "mandate", "status": "inactive"}))
    assert (obs.kind, obs.status, obs.object_type) == (ObjectKind.AGREEMENT, AgreementStatus.CLOSED, "mandate")


def test_fetched_payment_intent_is_dated_by_the_provider_not_the_fetch() -> None:
    (obs,) = stripe.parse(orjson.dumps(intent("requires_capture")), account="acct", source=Source.POLL,
                          evidence_id="f-1", observed_at=NOW, object_kind="object")
    assert (obs.status, obs.occurred_at, obs.source) == (
        PaymentStatus.AUTHORIZED, datetime.fromtimestamp(CREATED, UTC), Source.POLL)


def test_fetched_intent_after_failed_attempt_is_failed() -> None:
    (obs,) = stripe.parse(orjson.dumps(intent("requires_payment_method", last_payment_error={"code": "x"})),
                          account="acct", source=Source.POLL, evidence_id="f-1", observed_at=NOW,
                          object_kind="object")
    assert obs.status is PaymentStatus.FAILED


def test_event_without_data_object_is_malformed() -> None:
    with pytest.raises(NormalizationError):
        push(orjson.dumps({"id": "evt", "type": "charge.succeeded", "created": CREATED, "data": {}}))


def test_thin_event_names_its_related_object() -> None:
    body = orjson.dumps({"id": "evt_t", "object": "v2.core.event", "type": "v1.payment_intent.succeeded",
                         "related_object": {"id": "pi_9", "type": "payment_intent", "url": "/v1/payment_intents/pi_9"}})
    (target,) = stripe.thin_targets(body)
    assert (target.object_type, target.object_id) == ("payment_intent", "pi_9")
