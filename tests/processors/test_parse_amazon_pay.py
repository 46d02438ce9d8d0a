"""Amazon Pay parser: Charge / Refund / Charge Permission objects and IPN targets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.amazon_pay import parse as amazon_pay
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import fold
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CHARGE_ID = "S01-1234567-1234567-C123456"


def charge(state: str, *, reason: str | None = None, captured: str | None = None) -> dict[str, Any]:
    # Shape of the Get Charge response (Amazon Pay API v2 reference).
    return {
        "chargeId": CHARGE_ID,
        "chargePermissionId": "S01-1234567-1234567",
        "chargeAmount": {"amount": "14.00", "currencyCode": "EUR"},
        "captureAmount": {"amount": captured, "currencyCode": "EUR"} if captured else None,
        "refundedAmount": None,
        "merchantMetadata": {"merchantReferenceId": "order-77"},
        "statusDetails": {"state": state, "reasonCode": reason, "reasonDescription": None,
                          "lastUpdatedTimestamp": "20240501T101500Z"},
        "creationTimestamp": "20240501T100000Z",
    }


def refund(state: str, amount: str = "4.00") -> dict[str, Any]:
    return {
        "refundId": "S01-1234567-1234567-R000001",
        "chargeId": CHARGE_ID,
        "refundAmount": {"amount": amount, "currencyCode": "EUR"},
        "statusDetails": {"state": state, "reasonCode": None, "lastUpdatedTimestamp": "20240502T090000Z"},
        "creationTimestamp": "20240502T085900Z",
    }


def run(obj: dict[str, Any], evidence: str = "fetch-1") -> list[Any]:
    return amazon_pay.parse(orjson.dumps(obj), account="eu-main", source=Source.POLL, evidence_id=evidence,
                            observed_at=NOW, object_kind="object")


@pytest.mark.parametrize(("state", "expected"), [
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
    assert (obs.amount, obs.currency, dict(obs.captures)) == (1400, "EUR", {CHARGE_ID: 1400})
    assert obs.occurred_at == datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    assert obs.order_ref == "order-77"


def test_reason_code_is_carried_verbatim() -> None:
    (obs,) = run(charge("Declined", reason="HardDeclined"))
    assert obs.reason_code == "HardDeclined"


def test_unknown_charge_state_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match="Settled"):
        run(charge("Settled"))


def test_refund_is_observed_under_its_charge_as_amount_only() -> None:
    (obs,) = run(refund("Refunded"))
    assert (obs.object_type, obs.object_id, obs.status) == ("charge", CHARGE_ID, None)
    assert dict(obs.refunds) == {"S01-1234567-1234567-R000001": 400}


def test_refund_initiated_contributes_no_amount() -> None:
    (obs,) = run(refund("RefundInitiated"))
    assert dict(obs.refunds) == {}


def test_refund_before_charge_is_parked_then_counts() -> None:
    early = run(refund("Refunded"), "fetch-r")
    assert fold(early).status is None
    state = fold([*early, *run(charge("Captured", captured="14.00"), "fetch-c")])
    assert (state.status, state.refunded_amount) == (PaymentStatus.PARTIALLY_REFUNDED, 400)


@pytest.mark.parametrize(("state", "expected"), [
    ("Chargeable", AgreementStatus.ACTIVE),
    ("NonChargeable", AgreementStatus.SUSPENDED),
    ("Closed", AgreementStatus.CLOSED),
])
def test_charge_permission_is_an_agreement(state: str, expected: AgreementStatus) -> None:
    (obs,) = run({"chargePermissionId": "S01-1234567-1234567",
                  "statusDetails": {"state": state, "reasons": None, "lastUpdatedTimestamp": "20240501T100000Z"}})
    assert (obs.kind, obs.status, obs.object_type) == (ObjectKind.AGREEMENT, expected, "charge_permission")


def test_thin_targets_reads_the_ipn_inside_sns() -> None:
    ipn = {"NotificationVersion": "V2", "NotificationType": "STATE_CHANGE", "ObjectType": "REFUND",
           "ObjectId": "S01-R1", "ChargePermissionId": "S01-1"}
    sns = {"Type": "Notification", "MessageId": "m-1", "Message": orjson.dumps(ipn).decode()}
    (target,) = amazon_pay.thin_targets(orjson.dumps(sns))
    assert (target.object_type, target.object_id) == ("refund", "S01-R1")


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
