"""Amazon Pay parser: Charge / Refund / Dispute / Charge Permission objects and IPN targets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.amazon_pay import parse as amazon_pay
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import fold
from schemas.observation import Dispute, Movement
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CHARGE_ID = "S01-1234567-1234567-C123456"
PERMISSION_ID = "S01-1234567-1234567"
REFUND_ID = "S01-1234567-1234567-R000001"
DISPUTE_ID = "S01-1234567-1234567-B000001"


def charge(state: str, *, reason: str | None = None, captured: str | None = None, at: str = "20240501T101500Z",
           **extra: Any) -> dict[str, Any]:
    # Shape of the Get Charge response (Amazon Pay API v2 reference).
    return {
        "chargeId": CHARGE_ID,
        "chargePermissionId": PERMISSION_ID,
        "chargeAmount": {"amount": "14.00", "currencyCode": "EUR"},
        "captureAmount": {"amount": captured, "currencyCode": "EUR"} if captured else None,
        "refundedAmount": None,
        "merchantMetadata": {"merchantReferenceId": "order-77"},
        "statusDetails": {"state": state, "reasonCode": reason, "reasonDescription": None,
                          "lastUpdatedTimestamp": at},
        "creationTimestamp": "20240501T100000Z",
        "expirationTimestamp": "20240531T100000Z",
        **extra,
    }


def refund(state: str, amount: str = "4.00", *, at: str = "20240502T090000Z", reason: str | None = None,
           refund_id: str = REFUND_ID) -> dict[str, Any]:
    return {
        "refundId": refund_id,
        "chargeId": CHARGE_ID,
        "refundAmount": {"amount": amount, "currencyCode": "EUR"},
        "statusDetails": {"state": state, "reasonCode": reason, "lastUpdatedTimestamp": at},
        "creationTimestamp": "20240502T085900Z",
    }


def dispute(state: str, *, resolution: str | None = None, reason: str | None = "MerchantResponseRequired",
            at: str = "2024-05-10T09:00:00Z") -> dict[str, Any]:
    # Shape of the Get Dispute response (Amazon Pay API v2 reference, Dispute object).
    return {
        "disputeId": DISPUTE_ID,
        "chargeId": CHARGE_ID,
        "disputeType": "Chargeback",
        "disputeAmount": {"amount": "14.00", "currencyCode": "EUR"},
        "filingReason": "ProductNotReceived",
        "statusDetails": {"state": state, "reasonCode": reason, "reasonDescription": None, "resolution": resolution,
                          "lastUpdatedTimestamp": at},
        "merchantEvidences": [],
        "merchantResponseDeadline": "2024-05-21T09:00:00Z",
        "resolutionAuthority": "AmazonPay",
        "creationTimestamp": "2024-05-10T08:00:00Z",
        "releaseEnvironment": "Sandbox",
    }


def run(obj: dict[str, Any], evidence: str = "fetch-1") -> list[Any]:
    return amazon_pay.parse(orjson.dumps(obj), account="eu-main", source=Source.POLL, evidence_id=evidence,
                            observed_at=NOW, object_kind="object")


@pytest.mark.parametrize(("state", "expected"), [
    ("Pending", PaymentStatus.PENDING),
    ("AuthorizationInitiated", PaymentStatus.PENDING),
    ("Authorized", PaymentStatus.AUTHORIZED),
    ("CaptureInitiated", PaymentStatus.AUTHORIZED),
    ("Canceled", PaymentStatus.CANCELED),
    ("Declined", PaymentStatus.FAILED),
])
def test_charge_states_map_explicitly(state: str, expected: PaymentStatus) -> None:
    (obs,) = run(charge(state))
    assert (obs.status, obs.provider_status, obs.object_type, obs.object_id) == (
        expected, state, "charge", CHARGE_ID)


def test_captured_charge_carries_amounts_in_minor_units_and_provider_time() -> None:
    (obs,) = run(charge("Captured", captured="14.00"))
    assert obs.status is PaymentStatus.CAPTURED
    assert (obs.amount, obs.currency, dict(obs.captures)) == (1400, "EUR", {CHARGE_ID: Movement(1400)})
    assert obs.occurred_at == datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    assert obs.order_ref == "order-77"


def test_charge_names_its_charge_permission_and_when_the_authorization_expires() -> None:
    (obs,) = run(charge("Authorized"))
    assert obs.agreement_ref == PERMISSION_ID
    assert obs.authorization_expires_at == datetime(2024, 5, 31, 10, 0, tzinfo=UTC)


def test_charge_that_expired_unused_stays_canceled_with_its_reason() -> None:
    authorized = run(charge("Authorized"), "f-1")
    expired = run(charge("Canceled", reason="ExpiredUnused", at="20240531T100000Z"), "f-2")
    (obs,) = expired
    assert (obs.status, obs.reason_code) == (PaymentStatus.CANCELED, "ExpiredUnused")
    state = fold([*expired, *authorized])
    assert (state.status, state.reason_code) == (PaymentStatus.CANCELED, "ExpiredUnused")


def test_reason_code_is_carried_verbatim() -> None:
    (obs,) = run(charge("Declined", reason="HardDeclined"))
    assert obs.reason_code == "HardDeclined"


def test_unknown_charge_state_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match="Settled") as raised:
        run(charge("Settled"))
    assert (raised.value.provider, raised.value.word) == ("amazon_pay", "Settled")


@pytest.mark.parametrize(("state", "money"), [
    ("RefundInitiated", MoneyState.PENDING), ("Refunded", MoneyState.SUCCEEDED), ("Declined", MoneyState.FAILED),
])
def test_refund_is_a_movement_by_its_id_under_its_charge(state: str, money: MoneyState) -> None:
    (obs,) = run(refund(state))
    assert (obs.object_type, obs.object_id, obs.status, obs.provider_status) == (
        "charge", CHARGE_ID, None, f"Refund:{state}")
    assert dict(obs.refunds) == {REFUND_ID: Movement(400, money)}


def test_declined_refund_carries_its_reason_and_never_counts() -> None:
    (declined,) = run(refund("Declined", reason="AmazonRejected", at="20240502T100000Z"), "f-r2")
    assert declined.reason_code == "AmazonRejected"
    history = [*run(charge("Captured", captured="14.00"), "f-c"), *run(refund("RefundInitiated"), "f-r1"),
               declined]
    state = fold(history)
    assert (state.status, state.captured_amount, state.refunded_amount) == (PaymentStatus.CAPTURED, 1400, 0)


def test_refund_before_charge_is_parked_then_counts() -> None:
    early = run(refund("Refunded"), "fetch-r")
    assert fold(early).status is None
    state = fold([*early, *run(charge("Captured", captured="14.00"), "fetch-c")])
    assert (state.status, state.refunded_amount) == (PaymentStatus.PARTIALLY_REFUNDED, 400)


def test_unknown_refund_state_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        run(refund("Reversed"))
    assert raised.value.word == "Reversed"


@pytest.mark.parametrize(("state", "resolution", "status", "dispute_state"), [
    ("UnderReview", None, PaymentStatus.DISPUTED, DisputeState.OPEN),
    ("ActionRequired", None, PaymentStatus.DISPUTED, DisputeState.OPEN),
    ("Resolved", "BuyerWon", PaymentStatus.CHARGED_BACK, DisputeState.LOST),
    ("Closed", "BuyerWon", PaymentStatus.CHARGED_BACK, DisputeState.LOST),
    ("Resolved", "MerchantWon", PaymentStatus.CAPTURED, DisputeState.WON),
    ("Closed", "NoFault", PaymentStatus.CAPTURED, DisputeState.WON),
])
def test_dispute_is_observed_under_its_charge_with_its_status_word(
    state: str, resolution: str | None, status: PaymentStatus, dispute_state: DisputeState,
) -> None:
    (obs,) = run(dispute(state, resolution=resolution))
    assert (obs.object_type, obs.object_id, obs.kind, obs.status) == ("charge", CHARGE_ID, ObjectKind.PAYMENT, status)
    assert dict(obs.disputes) == {DISPUTE_ID: Dispute(1400, dispute_state, "ProductNotReceived")}
    assert obs.provider_status == "Dispute:" + state + (f":{resolution}" if resolution else "")
    assert (obs.currency, obs.occurred_at) == ("EUR", datetime(2024, 5, 10, 9, 0, tzinfo=UTC))


def test_dispute_lost_then_nothing_rewinds_it_and_won_returns_the_money_status() -> None:
    captured = run(charge("Captured", captured="14.00"), "f-c")
    opened = run(dispute("UnderReview"), "f-d1")
    lost = run(dispute("Resolved", resolution="BuyerWon", at="2024-05-20T09:00:00Z"), "f-d2")
    won = run(dispute("Resolved", resolution="MerchantWon", at="2024-05-20T09:00:00Z"), "f-d3")
    state = fold([*lost, *opened, *captured])
    assert (state.status, state.disputed_amount) == (PaymentStatus.CHARGED_BACK, 1400)
    state = fold([*won, *opened, *captured])
    assert (state.status, state.disputed_amount) == (PaymentStatus.CAPTURED, 0)


def test_finished_dispute_without_a_resolution_is_malformed() -> None:
    with pytest.raises(NormalizationError, match="without a resolution"):
        run(dispute("Closed", resolution=None))


def test_unknown_dispute_state_or_resolution_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        run(dispute("Escalated"))
    assert raised.value.word == "Escalated"
    with pytest.raises(UnknownProviderStatus) as raised:
        run(dispute("Resolved", resolution="Split"))
    assert raised.value.word == "Split"


@pytest.mark.parametrize(("state", "expected"), [
    ("Chargeable", AgreementStatus.ACTIVE),
    ("NonChargeable", AgreementStatus.SUSPENDED),
    ("Closed", AgreementStatus.CLOSED),
])
def test_charge_permission_is_an_agreement(state: str, expected: AgreementStatus) -> None:
    (obs,) = run({"chargePermissionId": PERMISSION_ID,
                  "statusDetails": {"state": state, "reasons": None, "lastUpdatedTimestamp": "20240501T100000Z"}})
    assert (obs.kind, obs.status, obs.object_type) == (ObjectKind.AGREEMENT, expected, "charge_permission")


def test_charge_permission_keeps_every_reason_code() -> None:
    reasons = [{"reasonCode": "BuyerCanceled", "reasonDescription": "…"},
               {"reasonCode": "ChargeInProgress", "reasonDescription": "…"}]
    (obs,) = run({"chargePermissionId": PERMISSION_ID,
                  "statusDetails": {"state": "NonChargeable", "reasons": reasons,
                                    "lastUpdatedTimestamp": "20240501T100000Z"}})
    assert obs.reason_code == "BuyerCanceled,ChargeInProgress"


def test_every_observation_of_a_fetched_payment_object_names_the_charge() -> None:
    for obj in (charge("Captured", captured="14.00"), refund("Refunded"), dispute("UnderReview")):
        (obs,) = run(obj)
        assert obs.object_type in amazon_pay.PAYMENT_OBJECT_TYPES
    assert frozenset({"charge"}) == amazon_pay.PAYMENT_OBJECT_TYPES


def ipn(object_type: str, notification: str = "STATE_CHANGE", object_id: str = "S01-X1") -> bytes:
    message = {"NotificationVersion": "V2", "NotificationType": notification, "ObjectType": object_type,
               "ObjectId": object_id, "ChargePermissionId": "S01-1", "MerchantID": "M1", "NotificationId": "n"}
    return orjson.dumps({"Type": "Notification", "MessageId": "m-1", "Message": orjson.dumps(message).decode()})


@pytest.mark.parametrize(("object_type", "fetched"), [
    ("CHARGE", "charge"), ("REFUND", "refund"), ("CHARGEBACK", "dispute"), ("CHARGE_PERMISSION", "charge_permission"),
])
@pytest.mark.parametrize("notification", ["STATE_CHANGE", "ATTRIBUTE_CHANGE"])
def test_thin_targets_reads_the_ipn_inside_sns(object_type: str, fetched: str, notification: str) -> None:
    (target,) = amazon_pay.thin_targets(ipn(object_type, notification))
    assert (target.object_type, target.object_id) == (fetched, "S01-X1")


@pytest.mark.parametrize(("object_type", "notification", "word"), [
    ("CHECKOUT_SESSION", "STATE_CHANGE", "CHECKOUT_SESSION"), ("CHARGE", "DELETION", "DELETION"),
])
def test_an_unknown_object_type_or_notification_type_is_named(object_type: str, notification: str,
                                                              word: str) -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        amazon_pay.thin_targets(ipn(object_type, notification))
    assert (raised.value.provider, raised.value.word) == ("amazon_pay", word)


def test_an_ipn_without_its_notification_type_is_malformed() -> None:
    message = {"ObjectType": "CHARGE", "ObjectId": "S01-9"}
    with pytest.raises(NormalizationError, match="NotificationType"):
        amazon_pay.thin_targets(orjson.dumps({"Message": orjson.dumps(message).decode()}))


def test_a_push_body_is_not_parsed_as_an_object() -> None:
    with pytest.raises(NormalizationError):
        amazon_pay.parse(b"{}", account="a", source=Source.PUSH, evidence_id="e", observed_at=NOW,
                         object_kind="event")


def test_amount_with_too_many_decimals_is_malformed() -> None:
    bad = charge("Authorized")
    bad["chargeAmount"] = {"amount": "14.001", "currencyCode": "EUR"}
    with pytest.raises(NormalizationError, match="decimals"):
        run(bad)


def test_sync_status_uses_the_same_maps() -> None:
    assert amazon_pay.sync_status("charge", "Authorized") is PaymentStatus.AUTHORIZED
    with pytest.raises(UnknownProviderStatus):
        amazon_pay.sync_status("charge", "authorized")
