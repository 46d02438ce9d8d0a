"""Amazon Pay (API v2): Charge, Refund and Charge Permission objects → observations.

Amazon Pay pushes are thin: an IPN (over SNS) names an object and the fetcher gets it with Get Charge /
Get Refund / Get Charge Permission. :func:`thin_targets` reads the IPN; :func:`parse` reads the fetched
object. A Refund is observed under the payment key of its Charge (``charge:{chargeId}``), so a refund that
arrives before its charge is parked by the join until the charge is known.

Reason codes (``statusDetails.reasonCode``: e.g. ``ExpiredUnused``, ``AmazonCanceled``,
``MerchantCanceled``, ``ChargePermissionCanceled``, ``BuyerCanceled``, ``SoftDeclined``, ``HardDeclined``,
``AmazonRejected``, ``ProcessingFailure``, ``TransactionTimedOut``) are carried verbatim as
``reason_code``: the state alone decides the canonical status, so a new reason code cannot mislead it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ingest.providers.parse_support import (
    FetchTarget,
    Stamp,
    field_of,
    iso_time,
    load_object,
    lookup,
    minor_units,
    object_at,
)
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

PROVIDER = "amazon_pay"

CHARGE_STATES: Mapping[str, PaymentStatus] = {
    "Pending": PaymentStatus.PENDING,
    "AuthorizationInitiated": PaymentStatus.PENDING,
    "Authorized": PaymentStatus.AUTHORIZED,
    # The capture was requested but not settled yet: the funds are still only authorized.
    "CaptureInitiated": PaymentStatus.AUTHORIZED,
    "Captured": PaymentStatus.CAPTURED,
    "Canceled": PaymentStatus.CANCELED,
    "Declined": PaymentStatus.FAILED,
}

# A Refund never says the charge's overall status: it contributes a refunded amount once it is Refunded.
# None = amount-only (or nothing yet); the join derives partially_refunded / refunded from the amounts.
REFUND_STATES: Mapping[str, None] = {
    "RefundInitiated": None,
    "Refunded": None,
    "Declined": None,
}

CHARGE_PERMISSION_STATES: Mapping[str, AgreementStatus] = {
    "Chargeable": AgreementStatus.ACTIVE,
    "NonChargeable": AgreementStatus.SUSPENDED,
    "Closed": AgreementStatus.CLOSED,
}

# IPN ObjectType → the object type the fetcher gets.
IPN_OBJECT_TYPES: Mapping[str, str] = {
    "CHARGE": "charge",
    "REFUND": "refund",
    "CHARGE_PERMISSION": "charge_permission",
}

SYNC_STATUS_MAPS: Mapping[str, Mapping[str, PaymentStatus | AgreementStatus]] = {
    "charge": CHARGE_STATES,
    "charge_permission": CHARGE_PERMISSION_STATES,
}


def sync_status(object_type: str, provider_status: str) -> PaymentStatus | AgreementStatus:
    """The status a checkout's synchronous result names (POST /v1/observations)."""
    states = lookup(SYNC_STATUS_MAPS, object_type, PROVIDER, "sync object type")
    return lookup(states, provider_status, PROVIDER, f"{object_type} state")


def thin_targets(body: bytes) -> list[FetchTarget]:
    """The object an IPN names. Accepts the SNS envelope (``Message`` holds the IPN JSON) or the IPN."""
    envelope = load_object(body, "amazon_pay IPN")
    message: dict[str, Any] = envelope
    if "Message" in envelope:
        message = load_object(field_of(envelope, "Message", str, "amazon_pay SNS").encode(), "amazon_pay IPN")
    object_type = lookup(
        IPN_OBJECT_TYPES, field_of(message, "ObjectType", str, "amazon_pay IPN"), PROVIDER, "IPN ObjectType"
    )
    return [FetchTarget(object_type, field_of(message, "ObjectId", str, "amazon_pay IPN"))]


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    """A fetched Charge, Refund or Charge Permission (recognised by its id fields) → one observation."""
    if object_kind != "object":
        raise NormalizationError(
            "amazon_pay: pushes are thin IPNs and are fetched, not parsed", reason="unexpected_record"
        )
    resource = load_object(body, "amazon_pay object")
    stamp = Stamp(account, source, evidence_id, observed_at)
    if "refundId" in resource:
        return [_refund(resource, stamp)]
    if "chargeId" in resource:
        return [_charge(resource, stamp)]
    if "chargePermissionId" in resource:
        return [_charge_permission(resource, stamp)]
    raise NormalizationError("amazon_pay: object is not a Charge, Refund or Charge Permission",
                             reason="malformed_body")


def _status_details(resource: Mapping[str, Any], what: str) -> tuple[str, str | None, datetime]:
    details = object_at(resource, "statusDetails", what)
    state = field_of(details, "state", str, what)
    reason = details.get("reasonCode")
    if reason is None and isinstance(details.get("reasons"), list) and details["reasons"]:
        first = details["reasons"][0]
        reason = first.get("reasonCode") if isinstance(first, dict) else None
    updated = details.get("lastUpdatedTimestamp") or resource.get("creationTimestamp")
    return state, reason if isinstance(reason, str) else None, amazon_time(updated, what)


def amazon_time(value: Any, what: str) -> datetime:
    """Amazon Pay writes ``20190714T155300Z`` (basic ISO 8601); extended ISO 8601 is accepted too."""
    if isinstance(value, str) and len(value) == 16 and value[8] == "T":
        try:
            return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            pass
    return iso_time(value, what)


def _price(resource: Mapping[str, Any], name: str, what: str) -> tuple[int, str] | None:
    price = resource.get(name)
    if price is None:
        return None
    if not isinstance(price, dict):
        raise NormalizationError(f"{what}: {name} is not an object", reason="malformed_body")
    currency = field_of(price, "currencyCode", str, f"{what}.{name}").upper()
    return minor_units(field_of(price, "amount", str, f"{what}.{name}"), currency, f"{what}.{name}"), currency


def _order_ref(resource: Mapping[str, Any]) -> str | None:
    metadata = resource.get("merchantMetadata")
    reference = metadata.get("merchantReferenceId") if isinstance(metadata, dict) else None
    return reference if isinstance(reference, str) and reference else None


def _charge(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay Charge"
    charge_id = field_of(resource, "chargeId", str, what)
    state, reason, updated = _status_details(resource, what)
    status = lookup(CHARGE_STATES, state, PROVIDER, "Charge state")
    amount = _price(resource, "chargeAmount", what)
    captured = _price(resource, "captureAmount", what)
    captures = {charge_id: captured[0]} if captured and captured[0] > 0 and state == "Captured" else {}
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge", object_id=charge_id,
        kind=ObjectKind.PAYMENT, status=status, provider_status=state, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=updated, observed_at=stamp.observed_at,
        reason_code=reason, amount=amount[0] if amount else None, currency=amount[1] if amount else None,
        captures=captures, order_ref=_order_ref(resource),
    )


def _refund(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay Refund"
    refund_id = field_of(resource, "refundId", str, what)
    state, reason, updated = _status_details(resource, what)
    status = lookup(REFUND_STATES, state, PROVIDER, "Refund state")
    refunded = _price(resource, "refundAmount", what)
    refunds = {refund_id: refunded[0]} if refunded and state == "Refunded" else {}
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge",
        object_id=field_of(resource, "chargeId", str, what), kind=ObjectKind.PAYMENT, status=status,
        provider_status=f"Refund:{state}", source=stamp.source, evidence_id=stamp.evidence_id,
        occurred_at=updated, observed_at=stamp.observed_at, reason_code=reason,
        currency=refunded[1] if refunded else None, refunds=refunds,
    )


def _charge_permission(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay ChargePermission"
    state, reason, updated = _status_details(resource, what)
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge_permission",
        object_id=field_of(resource, "chargePermissionId", str, what), kind=ObjectKind.AGREEMENT,
        status=lookup(CHARGE_PERMISSION_STATES, state, PROVIDER, "Charge Permission state"),
        provider_status=state, source=stamp.source, evidence_id=stamp.evidence_id, occurred_at=updated,
        observed_at=stamp.observed_at, reason_code=reason, order_ref=_order_ref(resource),
    )

