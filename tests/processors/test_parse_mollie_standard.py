"""Mollie (fetched payments, hints) and Standard Webhooks (status_map) parsers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.mollie import parse as mollie
from ingest.providers.standard import parse as standard
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import fold
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def payment(status: str, **extra: Any) -> dict[str, Any]:
    # Shape of GET /v2/payments/{id} (Mollie API reference).
    return {"resource": "payment", "id": "tr_WDqYK6vllg", "mode": "test", "status": status,
            "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": "2024-05-01T10:00:00+00:00",
            "paidAt": "2024-05-01T10:05:00+00:00", "expiredAt": "2024-05-01T10:20:00+00:00",
            "metadata": {"order_ref": "order-1"}, **extra}


def poll(obj: dict[str, Any], evidence: str = "f-1") -> list[Any]:
    return mollie.parse(orjson.dumps(obj), account="nl", source=Source.POLL, evidence_id=evidence,
                        observed_at=NOW, object_kind="object")


@pytest.mark.parametrize(("status", "expected"), [
    ("open", PaymentStatus.PENDING), ("pending", PaymentStatus.PENDING),
    ("authorized", PaymentStatus.AUTHORIZED), ("paid", PaymentStatus.CAPTURED),
    ("canceled", PaymentStatus.CANCELED), ("expired", PaymentStatus.FAILED), ("failed", PaymentStatus.FAILED),
])
def test_mollie_statuses_map_explicitly(status: str, expected: PaymentStatus) -> None:
    (obs,) = poll(payment(status))
    assert (obs.status, obs.object_type, obs.object_id) == (expected, "payment", "tr_WDqYK6vllg")


def test_paid_payment_is_dated_by_paid_at_and_captures_the_amount() -> None:
    (obs,) = poll(payment("paid"))
    assert obs.occurred_at == datetime(2024, 5, 1, 10, 5, tzinfo=UTC)
    assert (obs.amount, dict(obs.captures), obs.order_ref) == (1000, {"tr_WDqYK6vllg:captured": 1000}, "order-1")


def test_growing_refund_totals_count_once_each_poll() -> None:
    first = poll(payment("paid", amountRefunded={"value": "2.00", "currency": "EUR"}), "f-1")
    second = poll(payment("paid", amountRefunded={"value": "10.00", "currency": "EUR"}), "f-2")
    again = poll(payment("paid", amountRefunded={"value": "10.00", "currency": "EUR"}), "f-3")
    state = fold([*second, *first, *again])
    assert (state.status, state.refunded_amount) == (PaymentStatus.REFUNDED, 1000)


def test_charged_back_amount_makes_it_charged_back() -> None:
    (obs,) = poll(payment("paid", amountChargedBack={"value": "10.00", "currency": "EUR"}))
    assert (obs.status, obs.reason_code) == (PaymentStatus.CHARGED_BACK, "chargeback")


def test_unknown_mollie_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus):
        poll(payment("settled"))


def test_hint_form_body_names_the_payment() -> None:
    (target,) = mollie.thin_targets(b"id=tr_WDqYK6vllg")
    assert (target.object_type, target.object_id) == ("payment", "tr_WDqYK6vllg")


def test_hint_without_id_is_malformed() -> None:
    with pytest.raises(NormalizationError):
        mollie.thin_targets(b"foo=bar")


STATUS_MAP = {"payment.succeeded": "captured", "payment.failed": "failed", "mandate.revoked": "closed",
              "payment.refunded": "amount_only", "invoice.sent": "ignore"}


def standard_event(event_type: str, **data: Any) -> bytes:
    return orjson.dumps({"type": event_type, "timestamp": "2024-05-01T11:00:00Z",
                         "data": {"id": "pay_1", **data}})


def receive(body: bytes) -> list[Any]:
    return standard.parse(body, account="acme", source=Source.PUSH, evidence_id="msg_1", observed_at=NOW,
                          object_kind="event", status_map=STATUS_MAP)


def test_standard_event_uses_the_account_status_map() -> None:
    (obs,) = receive(standard_event("payment.succeeded", amount=1500, currency="usd", captured_amount=1500,
                                    order_ref="o-5"))
    assert (obs.status, obs.object_type, obs.object_id, obs.amount, obs.currency, obs.order_ref) == (
        PaymentStatus.CAPTURED, "payment", "pay_1", 1500, "USD", "o-5")
    assert dict(obs.captures) == {"pay_1:captured": 1500}


def test_standard_agreement_status_makes_an_agreement() -> None:
    (obs,) = receive(standard_event("mandate.revoked"))
    assert (obs.kind, obs.status, obs.object_type) == (ObjectKind.AGREEMENT, AgreementStatus.CLOSED, "agreement")


def test_standard_amount_only_and_ignore() -> None:
    (obs,) = receive(standard_event("payment.refunded", refunded_amount=300))
    assert (obs.status, dict(obs.refunds)) == (None, {"pay_1:refunded": 300})
    assert receive(standard_event("invoice.sent")) == []


def test_standard_unmapped_event_type_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match=r"payment\.disputed"):
        receive(standard_event("payment.disputed"))


def test_standard_map_value_must_be_canonical() -> None:
    with pytest.raises(NormalizationError, match="canonical"):
        standard.parse(standard_event("payment.succeeded"), account="acme", source=Source.PUSH,
                       evidence_id="m", observed_at=NOW, object_kind="event",
                       status_map={"payment.succeeded": "succeeded"})
