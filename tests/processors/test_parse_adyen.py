"""Adyen parser: notification items by (eventCode, success)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.adyen import parse as adyen
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import fold
from schemas.status import PaymentStatus, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# From Adyen/adyen-python-api-library test/UtilTest.py (commit b6f49792b79c23e2674b35c04dd045aa07daf599),
# as copied into ../shared/vectors/adyen.json: "test_notification_request_item_hmac".
VECTOR_ITEM: dict[str, Any] = {
    "pspReference": "7914073381342284",
    "merchantReference": "TestPayment-1407325143704",
    "merchantAccountCode": "TestMerchant",
    "amount": {"currency": "EUR", "value": 1130},
    "eventCode": "AUTHORISATION",
    "success": "true",
    "eventDate": "2019-05-06T17:15:34.121+02:00",
    "operations": ["CANCEL", "CAPTURE", "REFUND"],
    "paymentMethod": "visa",
}


def modification(code: str, psp: str, value: int, success: str = "true", minute: int = 20) -> dict[str, Any]:
    return {"pspReference": psp, "originalReference": "7914073381342284", "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704", "amount": {"currency": "EUR", "value": value},
            "eventCode": code, "success": success, "eventDate": f"2019-05-06T17:{minute}:00+02:00"}


def push(item: dict[str, Any], evidence: str = "d-1") -> list[Any]:
    return adyen.parse(orjson.dumps(item), account="main", source=Source.PUSH, evidence_id=evidence,
                       observed_at=NOW, object_kind="event")


def test_published_vector_item_is_an_authorisation() -> None:
    (obs,) = push(VECTOR_ITEM)
    assert (obs.status, obs.object_type, obs.object_id, obs.amount, obs.currency, obs.order_ref) == (
        PaymentStatus.AUTHORIZED, "payment", "7914073381342284", 1130, "EUR", "TestPayment-1407325143704")
    assert obs.occurred_at == datetime(2019, 5, 6, 15, 15, 34, 121000, tzinfo=UTC)
    assert obs.reason_code is None


def test_refused_authorisation_is_failed_with_reason() -> None:
    (obs,) = push({**VECTOR_ITEM, "success": "false", "reason": "Refused"})
    assert (obs.status, obs.reason_code, obs.provider_status) == (PaymentStatus.FAILED, "Refused",
                                                                  "AUTHORISATION:false")


def test_capture_and_refund_are_amount_only_under_the_payment() -> None:
    (capture,) = push(modification("CAPTURE", "C1", 1130))
    (refund,) = push(modification("REFUND", "R1", 130))
    assert (capture.status, capture.object_id, dict(capture.captures)) == (None, "7914073381342284", {"C1": 1130})
    assert (refund.status, dict(refund.refunds)) == (None, {"R1": 130})


def test_lifecycle_folds_to_partially_refunded_in_any_order() -> None:
    items = [(VECTOR_ITEM, "d-1"), (modification("CAPTURE", "C1", 1130), "d-2"),
             (modification("REFUND", "R1", 130, minute=30), "d-3")]
    observations = [obs for item, evidence in items for obs in push(item, evidence)]
    forward, backward = fold(observations), fold(list(reversed(observations)))
    assert (forward.status, forward.captured_amount, forward.refunded_amount) == (
        PaymentStatus.PARTIALLY_REFUNDED, 1130, 130)
    assert backward.to_dict() == forward.to_dict()


@pytest.mark.parametrize(("code", "expected"), [
    ("CANCELLATION", PaymentStatus.CANCELED),
    ("CHARGEBACK", PaymentStatus.CHARGED_BACK),
    ("NOTIFICATION_OF_CHARGEBACK", PaymentStatus.DISPUTED),
    ("CHARGEBACK_REVERSED", PaymentStatus.CAPTURED),
    ("CAPTURE_FAILED", PaymentStatus.FAILED),
])
def test_status_bearing_modifications(code: str, expected: PaymentStatus) -> None:
    (obs,) = push(modification(code, "M1", 1130))
    assert obs.status is expected


def test_failed_refund_contributes_nothing() -> None:
    (obs,) = push(modification("REFUND", "R1", 130, success="false"))
    assert (obs.status, dict(obs.refunds)) == (None, {})


def test_unknown_event_code_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match="DONATION"):
        push({**VECTOR_ITEM, "eventCode": "DONATION"})


def test_report_available_is_deliberately_ignored() -> None:
    assert push({**VECTOR_ITEM, "eventCode": "REPORT_AVAILABLE"}) == []


def test_success_must_be_a_boolean_word() -> None:
    with pytest.raises(NormalizationError, match="success"):
        push({**VECTOR_ITEM, "success": "maybe"})


def test_wrapped_batch_items_get_distinct_evidence() -> None:
    batch = {"live": "false", "notificationItems": [{"NotificationRequestItem": VECTOR_ITEM},
                                                    {"NotificationRequestItem": modification("CAPTURE", "C1", 1)}]}
    observations = push(batch, "batch-1")
    assert [obs.evidence_id for obs in observations] == ["batch-1#0", "batch-1#1"]


def test_sync_result_codes() -> None:
    assert adyen.sync_status("payment", "RedirectShopper") is PaymentStatus.REQUIRES_ACTION
    with pytest.raises(UnknownProviderStatus):
        adyen.sync_status("payment", "Authorized")
