"""Mollie (fetched payments, hints) and Standard Webhooks (status_map) parsers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.mollie import parse as mollie
from ingest.providers.standard import parse as standard
from paystream.errors import NormalizationError, UnknownProviderStatus
from paystream.metrics import EVENTS_IGNORED
from schemas.join import fold
from schemas.observation import Dispute, Movement
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PAYMENT_ID = "tr_WDqYK6vllg"


def payment(status: str, **extra: Any) -> dict[str, Any]:
    # Shape of GET /v2/payments/{id} (Mollie API reference).
    return {"resource": "payment", "id": PAYMENT_ID, "mode": "test", "status": status,
            "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": "2024-05-01T10:00:00+00:00",
            "paidAt": "2024-05-01T10:05:00+00:00", "expiredAt": "2024-05-01T10:20:00+00:00",
            "metadata": {"order_ref": "order-1"}, **extra}


def refund(refund_id: str, status: str, value: str = "2.00", *, at: str = "2024-05-02T09:00:00+00:00",
           **extra: Any) -> dict[str, Any]:
    # Shape of a Mollie refund (Get payment refund).
    return {"resource": "refund", "id": refund_id, "amount": {"value": value, "currency": "EUR"}, "status": status,
            "createdAt": at, "paymentId": PAYMENT_ID, **extra}


def chargeback(chargeback_id: str, value: str = "10.00", *, reversed_at: str | None = None) -> dict[str, Any]:
    # Shape of a Mollie chargeback (Get payment chargeback).
    return {"resource": "chargeback", "id": chargeback_id, "amount": {"value": value, "currency": "EUR"},
            "reason": {"code": "AC01", "description": "Account identifier incorrect"},
            "createdAt": "2024-05-03T09:00:00+00:00", "reversedAt": reversed_at, "paymentId": PAYMENT_ID}


def poll(obj: dict[str, Any], evidence: str = "f-1") -> list[Any]:
    return mollie.parse(orjson.dumps(obj), account="nl", source=Source.POLL, evidence_id=evidence,
                        observed_at=NOW, object_kind="object")


def listed(name: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(items), "_embedded": {name: list(items)}, "_links": {"self": {"href": "…"}}}


@pytest.mark.parametrize(("status", "expected"), [
    ("open", PaymentStatus.PENDING), ("pending", PaymentStatus.PENDING),
    ("authorized", PaymentStatus.AUTHORIZED), ("paid", PaymentStatus.CAPTURED),
    ("canceled", PaymentStatus.CANCELED), ("expired", PaymentStatus.FAILED), ("failed", PaymentStatus.FAILED),
])
def test_mollie_statuses_map_explicitly(status: str, expected: PaymentStatus) -> None:
    (obs,) = poll(payment(status))
    assert (obs.status, obs.object_type, obs.object_id) == (expected, "payment", PAYMENT_ID)


def test_paid_payment_is_dated_by_paid_at_and_captures_the_amount() -> None:
    (obs,) = poll(payment("paid"))
    assert obs.occurred_at == datetime(2024, 5, 1, 10, 5, tzinfo=UTC)
    assert (obs.amount, dict(obs.captures), obs.order_ref) == (1000, {f"{PAYMENT_ID}:captured": Movement(1000)},
                                                               "order-1")


def test_payment_names_its_mandate_and_the_capture_deadline_of_its_authorization() -> None:
    (obs,) = poll(payment("authorized", mandateId="mdt_h3gAaD5zP", authorizedAt="2024-05-01T10:01:00+00:00",
                          captureBefore="2024-05-29T10:01:00+00:00"))
    assert (obs.agreement_ref, obs.authorization_expires_at) == ("mdt_h3gAaD5zP",
                                                                 datetime(2024, 5, 29, 10, 1, tzinfo=UTC))
    (paid,) = poll(payment("paid", captureBefore="2024-05-29T10:01:00+00:00"))
    assert paid.authorization_expires_at is None  # only an authorization lapses


def test_growing_refund_totals_stand_in_when_no_refund_is_embedded() -> None:
    first = poll(payment("paid", amountRefunded={"value": "2.00", "currency": "EUR"}), "f-1")
    second = poll(payment("paid", amountRefunded={"value": "10.00", "currency": "EUR"}), "f-2")
    again = poll(payment("paid", amountRefunded={"value": "10.00", "currency": "EUR"}), "f-3")
    assert dict(first[0].refunds) == {f"{PAYMENT_ID}:refunded": Movement(200)}
    # Every poll dates the total by paidAt: the larger one holds, whichever fetch (id) came first.
    for history in ([*second, *first, *again], [*first, *again, *second]):
        state = fold(history)
        assert (state.status, state.refunded_amount) == (PaymentStatus.REFUNDED, 1000)
    assert fold([*poll(payment("paid", amountRefunded={"value": "2.00", "currency": "EUR"}), "f-9"),
                 *poll(payment("paid", amountRefunded={"value": "10.00", "currency": "EUR"}), "f-0")]
                ).refunded_amount == 1000


def test_embedded_refunds_and_chargebacks_are_observed_by_their_own_ids() -> None:
    body = payment("paid", amountRefunded={"value": "2.00", "currency": "EUR"},
                   _embedded={"refunds": [refund("re_1", "refunded")],
                              "chargebacks": [chargeback("chb_1", "8.00")]})
    status, refunded, charged_back = poll(body)
    assert (status.status, dict(status.refunds), dict(status.disputes)) == (PaymentStatus.CAPTURED, {}, {})
    assert (refunded.object_id, refunded.status, dict(refunded.refunds)) == (
        PAYMENT_ID, None, {"re_1": Movement(200, MoneyState.SUCCEEDED)})
    assert refunded.occurred_at == datetime(2024, 5, 2, 9, 0, tzinfo=UTC)
    assert (charged_back.status, charged_back.reason_code, dict(charged_back.disputes)) == (
        PaymentStatus.CHARGED_BACK, "AC01", {"chb_1": Dispute(800, DisputeState.LOST, "AC01")})
    state = fold(poll(body))
    assert (state.status, state.refunded_amount, state.disputed_amount) == (PaymentStatus.CHARGED_BACK, 200, 800)


@pytest.mark.parametrize(("status", "money"), [
    ("queued", MoneyState.PENDING), ("pending", MoneyState.PENDING), ("processing", MoneyState.PENDING),
    ("refunded", MoneyState.SUCCEEDED), ("failed", MoneyState.FAILED), ("canceled", MoneyState.CANCELED),
])
def test_refund_statuses_map_explicitly(status: str, money: MoneyState) -> None:
    _, observed = poll(payment("paid", _embedded={"refunds": [refund("re_1", status)]}))
    assert (dict(observed.refunds), observed.provider_status) == ({"re_1": Movement(200, money)}, f"refund:{status}")


def test_a_refund_that_fails_after_it_was_refunded_moves_the_payment_back() -> None:
    refunded = poll(payment("paid", _embedded={"refunds": [refund("re_1", "refunded", "10.00")]}), "f-1")
    assert fold(refunded).status is PaymentStatus.REFUNDED
    failed = poll(payment("paid", _embedded={"refunds": [refund("re_1", "failed", "10.00")]}), "f-2")
    # Mollie dates a refund only by its creation: the failure wins on the tie by its progress.
    state = fold([*failed, *refunded])
    assert (state.status, state.refunded_amount) == (PaymentStatus.CAPTURED, 0)


def test_a_reversed_chargeback_is_won_and_the_payment_is_captured_again() -> None:
    lost = poll(payment("paid", _embedded={"chargebacks": [chargeback("chb_1")]}), "f-1")
    won = poll(payment("paid", _embedded={"chargebacks": [chargeback("chb_1", reversed_at="2024-05-20T09:00:00Z")]}),
               "f-2")
    assert fold(lost).status is PaymentStatus.CHARGED_BACK
    _, reversed_ = won
    assert (reversed_.status, reversed_.provider_status, reversed_.occurred_at) == (
        PaymentStatus.CAPTURED, "chargeback:reversed", datetime(2024, 5, 20, 9, 0, tzinfo=UTC))
    state = fold([*won, *lost])
    assert (state.status, state.disputed_amount) == (PaymentStatus.CAPTURED, 0)


def test_charged_back_total_stands_in_when_no_chargeback_is_embedded() -> None:
    (obs,) = poll(payment("paid", amountChargedBack={"value": "10.00", "currency": "EUR"}))
    assert (obs.status, obs.reason_code) == (PaymentStatus.CHARGED_BACK, "chargeback")
    assert dict(obs.disputes) == {f"{PAYMENT_ID}:chargeback": Dispute(1000, DisputeState.LOST)}


def test_unknown_mollie_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        poll(payment("settled"))
    assert (raised.value.provider, raised.value.word) == ("mollie", "settled")
    with pytest.raises(UnknownProviderStatus):
        poll(payment("paid", _embedded={"refunds": [refund("re_1", "bounced")]}))


def order(status: str, *payments: dict[str, Any], refunds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # Shape of GET /v2/orders/{id}?embed=payments,refunds (Mollie API reference, Orders API).
    embedded: dict[str, Any] = {"payments": list(payments)}
    if refunds is not None:
        embedded["refunds"] = refunds
    return {"resource": "order", "id": "ord_kEn1PlbGa", "orderNumber": "1337", "status": status,
            "amount": {"value": "10.00", "currency": "EUR"}, "createdAt": "2024-05-01T09:59:00+00:00",
            "_embedded": embedded}


def test_order_payments_are_observed_under_their_payment_keys_with_the_order_number() -> None:
    paid = payment("paid", orderId="ord_kEn1PlbGa", metadata=None)
    other = {**payment("canceled", orderId="ord_kEn1PlbGa", canceledAt="2024-05-01T10:02:00+00:00"),
             "id": "tr_other"}
    observations = poll(order("paid", other, paid, refunds=[refund("re_1", "pending")]))
    assert [(o.object_type, o.object_id, o.status, o.order_ref) for o in observations] == [
        ("payment", "tr_other", PaymentStatus.CANCELED, "1337"),
        ("payment", PAYMENT_ID, PaymentStatus.CAPTURED, "1337"),
        ("payment", PAYMENT_ID, None, None),
    ]
    assert dict(observations[2].refunds) == {"re_1": Movement(200, MoneyState.PENDING)}


def test_order_without_payments_observes_nothing_and_unknown_order_status_is_never_guessed() -> None:
    assert poll(order("created")) == []
    with pytest.raises(UnknownProviderStatus) as raised:
        poll(order("refunded"))
    assert raised.value.word == "refunded"


def test_a_listed_refund_is_observed_under_its_embedded_payment() -> None:
    item = {**refund("re_9", "refunded", "3.00"), "_embedded": {"payment": payment(
        "paid", amountRefunded={"value": "5.00", "currency": "EUR"}, amountChargedBack={"value": "1.00",
                                                                                       "currency": "EUR"})}}
    status, refunded = poll(listed("refunds", item))
    # Only what this refund says: no running totals beside a refund named by id.
    assert (status.object_id, status.status, dict(status.refunds), dict(status.disputes)) == (
        PAYMENT_ID, PaymentStatus.CAPTURED, {}, {})
    assert dict(refunded.refunds) == {"re_9": Movement(300, MoneyState.SUCCEEDED)}
    state = fold([status, refunded])
    assert (state.status, state.refunded_amount) == (PaymentStatus.PARTIALLY_REFUNDED, 300)


def test_a_listed_refund_without_its_payment_is_still_filed_under_it() -> None:
    (obs,) = poll(listed("refunds", refund("re_9", "pending")))
    assert (obs.object_type, obs.object_id, obs.status) == ("payment", PAYMENT_ID, None)
    assert poll(listed("refunds")) == []


def test_a_listed_chargeback_is_observed_under_its_embedded_payment() -> None:
    item = {**chargeback("chb_9", "10.00"), "_embedded": {"payment": payment("paid")}}
    status, charged_back = poll(listed("chargebacks", item))
    assert (status.status, charged_back.status, dict(charged_back.disputes)) == (
        PaymentStatus.CAPTURED, PaymentStatus.CHARGED_BACK, {"chb_9": Dispute(1000, DisputeState.LOST, "AC01")})


def subscription(status: str, **extra: Any) -> dict[str, Any]:
    # Shape of a Mollie subscription (Get subscription).
    return {"resource": "subscription", "id": "sub_rVKGtNd6s3", "mode": "test", "status": status,
            "amount": {"value": "25.00", "currency": "EUR"}, "interval": "1 month",
            "createdAt": "2024-05-01T09:00:00+00:00", "mandateId": "mdt_38HS4fsS", "customerId": "cst_stTC2WHAuS",
            **extra}


@pytest.mark.parametrize(("status", "expected"), [
    ("active", AgreementStatus.ACTIVE), ("pending", AgreementStatus.SUSPENDED),
    ("suspended", AgreementStatus.SUSPENDED), ("canceled", AgreementStatus.CLOSED),
    ("completed", AgreementStatus.CLOSED),
])
def test_subscription_is_an_agreement_on_its_mandate(status: str, expected: AgreementStatus) -> None:
    (obs,) = poll(listed("subscriptions", subscription(status, canceledAt="2024-06-01T00:00:00+00:00")))
    assert (obs.kind, obs.object_type, obs.object_id, obs.status, obs.agreement_ref) == (
        ObjectKind.AGREEMENT, "subscription", "sub_rVKGtNd6s3", expected, "mdt_38HS4fsS")
    # Only a cancellation has its own time; any other status is as of the fetch.
    assert obs.occurred_at == (datetime(2024, 6, 1, tzinfo=UTC) if status == "canceled" else NOW)


def test_unknown_subscription_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        poll(listed("subscriptions", subscription("paused")))
    assert raised.value.word == "paused"


def test_every_payment_observation_names_the_payment() -> None:
    body = payment("paid", _embedded={"refunds": [refund("re_1", "refunded")], "chargebacks": [chargeback("chb_1")]})
    assert {obs.object_type for obs in poll(body)} == mollie.PAYMENT_OBJECT_TYPES == frozenset({"payment"})


@pytest.mark.parametrize(("resource_id", "object_type"), [
    ("tr_WDqYK6vllg", "payment"), ("ord_kEn1PlbGa", "order"), ("re_4qqhO89gsT", "refund"),
    ("chb_n9z0tp", "chargeback"), ("sub_rVKGtNd6s3", "subscription"),
])
def test_hint_names_the_resource_to_fetch(resource_id: str, object_type: str) -> None:
    (target,) = mollie.thin_targets(f"id={resource_id}".encode())
    assert (target.object_type, target.object_id) == (object_type, resource_id)


@pytest.mark.parametrize("resource_id", ["cst_8wmqcHMN4U", "mdt_h3gAaD5zP"])
def test_customer_and_mandate_hints_are_ignored_and_counted(resource_id: str) -> None:
    prefix = resource_id.split("_")[0] + "_"
    before = EVENTS_IGNORED.labels("mollie", prefix)._value.get()
    assert mollie.thin_targets(f"id={resource_id}".encode()) == []
    assert EVENTS_IGNORED.labels("mollie", prefix)._value.get() == before + 1


def test_a_hint_with_an_unknown_prefix_is_named() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        mollie.thin_targets(b"id=pl_4Y0eZitmBnQ6IDoMqZQKh")
    assert (raised.value.provider, raised.value.word) == ("mollie", "pl_")


def test_hint_without_id_is_malformed() -> None:
    with pytest.raises(NormalizationError):
        mollie.thin_targets(b"foo=bar")
    with pytest.raises(NormalizationError, match="not a Mollie resource id"):
        mollie.thin_targets(b"id=WDqYK6vllg")


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
    assert dict(obs.captures) == {"pay_1:captured": Movement(1500)}


def test_standard_agreement_status_makes_an_agreement() -> None:
    (obs,) = receive(standard_event("mandate.revoked"))
    assert (obs.kind, obs.status, obs.object_type) == (ObjectKind.AGREEMENT, AgreementStatus.CLOSED, "agreement")


def test_standard_amount_only_and_ignore() -> None:
    (obs,) = receive(standard_event("payment.refunded", refunded_amount=300))
    # A running total of refunds (it may fall when a refund fails): the join reads it as of its time.
    assert (obs.status, dict(obs.refunds), obs.refunded_total) == (None, {}, 300)
    before = EVENTS_IGNORED.labels("standard", "invoice.sent")._value.get()
    assert receive(standard_event("invoice.sent")) == []
    assert EVENTS_IGNORED.labels("standard", "invoice.sent")._value.get() == before + 1


def test_standard_unmapped_event_type_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match=r"payment\.disputed"):
        receive(standard_event("payment.disputed"))


def test_standard_map_value_must_be_canonical() -> None:
    with pytest.raises(NormalizationError, match="canonical"):
        standard.parse(standard_event("payment.succeeded"), account="acme", source=Source.PUSH,
                       evidence_id="m", observed_at=NOW, object_kind="event",
                       status_map={"payment.succeeded": "succeeded"})
