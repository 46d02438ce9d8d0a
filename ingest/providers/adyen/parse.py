"""Adyen standard notifications: NotificationRequestItems → observations (push only; no pull).

The body is one item as ingest published it: the item itself, ``{"NotificationRequestItem": {...}}``, or a
whole ``{"notificationItems": [...]}`` batch (each item then gets ``{evidence_id}#{index}``).

Payment key: ``payment:{pspReference of the payment}`` — a modification (capture, refund, cancellation,
chargeback) names its payment in ``originalReference``. Each ``(eventCode, success)`` pair maps to a
status explicitly; ``None`` means the item says no overall status: a successful CAPTURE or REFUND contributes
its amount (keyed by the modification's own pspReference) and the join derives captured / refunded from the
amounts; an unsuccessful modification changes nothing. Event codes that are not about a payment's status
(reports, order bookkeeping) are listed in ``IGNORED_EVENT_CODES`` and produce no observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingest.providers.parse_support import Stamp, field_of, iso_time, load_object, lookup, optional_field
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

PROVIDER = "adyen"
P = PaymentStatus

EVENT_STATUSES: Mapping[tuple[str, bool], PaymentStatus | AgreementStatus | None] = {
    ("AUTHORISATION", True): P.AUTHORIZED,
    ("AUTHORISATION", False): P.FAILED,
    ("AUTHORISATION_ADJUSTMENT", True): P.AUTHORIZED,
    ("AUTHORISATION_ADJUSTMENT", False): None,
    ("PENDING", True): P.PENDING,
    ("PENDING", False): None,
    ("CAPTURE", True): None,  # amount-only: captures[pspReference] = amount
    ("CAPTURE", False): None,
    ("CAPTURE_FAILED", True): P.FAILED,  # the scheme rejected a capture reported as successful
    ("CAPTURE_FAILED", False): None,
    ("CANCELLATION", True): P.CANCELED,
    ("CANCELLATION", False): None,
    ("TECHNICAL_CANCEL", True): P.CANCELED,
    ("TECHNICAL_CANCEL", False): None,
    ("OFFER_CLOSED", True): P.FAILED,  # the shopper never completed the payment
    ("OFFER_CLOSED", False): None,
    ("REFUND", True): None,  # amount-only: refunds[pspReference] = amount
    ("REFUND", False): None,
    ("REFUND_FAILED", True): None,  # noted (provider_status) but the refunded amount is not retracted
    ("REFUND_FAILED", False): None,
    ("REFUNDED_REVERSED", True): None,
    ("REFUNDED_REVERSED", False): None,
    ("MANUAL_REVIEW_ACCEPT", True): None,
    ("MANUAL_REVIEW_ACCEPT", False): None,
    ("MANUAL_REVIEW_REJECT", True): P.FAILED,
    ("MANUAL_REVIEW_REJECT", False): None,
    ("NOTIFICATION_OF_CHARGEBACK", True): P.DISPUTED,
    ("NOTIFICATION_OF_CHARGEBACK", False): None,
    ("REQUEST_FOR_INFORMATION", True): P.DISPUTED,
    ("REQUEST_FOR_INFORMATION", False): None,
    ("CHARGEBACK", True): P.CHARGED_BACK,
    ("CHARGEBACK", False): None,
    ("SECOND_CHARGEBACK", True): P.CHARGED_BACK,
    ("SECOND_CHARGEBACK", False): None,
    ("PREARBITRATION_LOST", True): P.CHARGED_BACK,
    ("PREARBITRATION_LOST", False): None,
    ("CHARGEBACK_REVERSED", True): P.CAPTURED,
    ("CHARGEBACK_REVERSED", False): None,
    ("PREARBITRATION_WON", True): P.CAPTURED,
    ("PREARBITRATION_WON", False): None,
    ("RECURRING_CONTRACT", True): AgreementStatus.ACTIVE,
    ("RECURRING_CONTRACT", False): None,
}

# Not about one payment's status: acknowledged and dropped, deliberately.
IGNORED_EVENT_CODES = frozenset({
    "REPORT_AVAILABLE", "ORDER_OPENED", "ORDER_CLOSED", "PAIDOUT_REVERSED", "PAYOUT_THIRDPARTY",
    "PAYOUT_DECLINE", "PAYOUT_EXPIRE", "DISPUTE_DEFENSE_PERIOD_ENDED", "ISSUER_RESPONSE_TIMEFRAME_EXPIRED",
    "INFORMATION_SUPPLIED", "AUTORESCUE", "CANCEL_AUTORESCUE", "POSTPONED_REFUND",
})

# Checkout API resultCode words, for synchronous observations (POST /v1/observations).
RESULT_CODES: Mapping[str, PaymentStatus] = {
    "Authorised": P.AUTHORIZED,
    "Refused": P.FAILED,
    "Error": P.FAILED,
    "Cancelled": P.CANCELED,
    "Pending": P.PENDING,
    "Received": P.PENDING,
    "RedirectShopper": P.REQUIRES_ACTION,
    "IdentifyShopper": P.REQUIRES_ACTION,
    "ChallengeShopper": P.REQUIRES_ACTION,
    "PresentToShopper": P.REQUIRES_ACTION,
}


def sync_status(object_type: str, provider_status: str) -> PaymentStatus | AgreementStatus:
    if object_type != "payment":
        raise NormalizationError(f"adyen: sync observations are for object_type 'payment', not {object_type!r}",
                                 reason="unexpected_record")
    return lookup(RESULT_CODES, provider_status, PROVIDER, "resultCode")


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    if object_kind != "event":
        raise NormalizationError("adyen: only pushed notification items can be read", reason="unexpected_record")
    document = load_object(body, "adyen item")
    if "notificationItems" in document:
        entries = document["notificationItems"]
        if not isinstance(entries, list):
            raise NormalizationError("adyen: notificationItems is not a list", reason="malformed_body")
        items = [_unwrap(entry) for entry in entries]
        ids = [f"{evidence_id}#{index}" for index in range(len(items))]
    else:
        items, ids = [_unwrap(document)], [evidence_id]
    observations = []
    for item, item_evidence in zip(items, ids, strict=True):
        observation = _item(item, Stamp(account, source, item_evidence, observed_at))
        if observation is not None:
            observations.append(observation)
    return observations


def _unwrap(entry: Any) -> dict[str, Any]:
    item = entry.get("NotificationRequestItem", entry) if isinstance(entry, dict) else None
    if not isinstance(item, dict):
        raise NormalizationError("adyen: notification item is not an object", reason="malformed_body")
    return item


def _success(value: Any) -> bool:
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise NormalizationError(f"adyen: success is {value!r}, not 'true'/'false'", reason="malformed_body")


def _item(item: Mapping[str, Any], stamp: Stamp) -> Observation | None:
    what = "adyen item"
    code = field_of(item, "eventCode", str, what)
    if code in IGNORED_EVENT_CODES:
        return None
    success = _success(item.get("success"))
    status = lookup(EVENT_STATUSES, (code, success), PROVIDER, "eventCode/success")
    psp = field_of(item, "pspReference", str, what)
    payment_id = optional_field(item, "originalReference", str, what) or psp
    money = item.get("amount")
    value = currency = None
    if isinstance(money, dict):
        value = optional_field(money, "value", int, what)
        currency = optional_field(money, "currency", str, what)
    captures = {psp: value} if code == "CAPTURE" and success and value is not None else {}
    refunds = {psp: value} if code == "REFUND" and success and value is not None else {}
    # Only the authorisation states the payment's amount; modification amounts are their own.
    amount = value if code in ("AUTHORISATION", "AUTHORISATION_ADJUSTMENT") and success else None
    # On success `reason` holds authCode:cardSummary:expiry, not a reason: only refusals carry one.
    reason = None if success else item.get("reason")
    is_agreement = code == "RECURRING_CONTRACT"
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="recurring_contract" if is_agreement else "payment",
        object_id=payment_id, kind=ObjectKind.AGREEMENT if is_agreement else ObjectKind.PAYMENT, status=status,
        provider_status=f"{code}:{'true' if success else 'false'}", source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=iso_time(item.get("eventDate"), what),
        observed_at=stamp.observed_at, reason_code=reason if isinstance(reason, str) and reason else None,
        amount=amount, currency=currency.upper() if currency else None, captures=captures, refunds=refunds,
        order_ref=optional_field(item, "merchantReference", str, what),
    )
