"""Stripe: events (pushed, or found by the Events-list sweep) and fetched PaymentIntents → observations.

Payment key: ``payment_intent:{pi_…}`` — charges, refunds and disputes are observed under the
PaymentIntent they belong to (``charge:{ch_…}`` only for a legacy charge without one). Capture amounts are
keyed by charge id and refund amounts by refund id, so a PaymentIntent poll, a ``charge.captured`` push and
a ``refund.updated`` push of the same money count once. Agreements: ``mandate.updated`` and
``setup_intent.succeeded`` / ``payment_method.detached`` are observed under ``mandate:{id}`` /
``payment_method:{pm_…}``.

Provider time: ``event.created`` for events. A fetched PaymentIntent has no "updated" time, so a poll uses
``canceled_at`` or ``created``; a poll and a push therefore never race on time, and the join's transition
table plus progress rank decide (a poll that sees ``succeeded`` moves ``authorized`` forward; one that
sees an older status is a stale regression).

``order_ref`` comes from ``metadata.order_ref`` (or ``metadata.order_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ingest.providers.parse_support import (
    FetchTarget,
    Stamp,
    field_of,
    load_object,
    lookup,
    object_at,
    optional_field,
    unix_time,
)
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

PROVIDER = "stripe"
P = PaymentStatus

PAYMENT_INTENT_STATUSES: Mapping[str, PaymentStatus] = {
    "requires_payment_method": P.PENDING,  # P.FAILED when last_payment_error says an attempt failed
    "requires_confirmation": P.PENDING,
    "requires_action": P.REQUIRES_ACTION,
    "processing": P.PENDING,
    "requires_capture": P.AUTHORIZED,
    "canceled": P.CANCELED,
    "succeeded": P.CAPTURED,
}

CHARGE_STATUSES: Mapping[str, PaymentStatus] = {
    "pending": P.PENDING,
    "failed": P.FAILED,
    "succeeded": P.AUTHORIZED,  # refined below: captured / (partially_)refunded from the charge's flags
}

DISPUTE_STATUSES: Mapping[str, PaymentStatus] = {
    "warning_needs_response": P.DISPUTED,
    "warning_under_review": P.DISPUTED,
    "needs_response": P.DISPUTED,
    "under_review": P.DISPUTED,
    "won": P.CAPTURED,
    "warning_closed": P.CAPTURED,  # an inquiry closed without becoming a chargeback
    "lost": P.CHARGED_BACK,
}

MANDATE_STATUSES: Mapping[str, AgreementStatus] = {
    "active": AgreementStatus.ACTIVE,
    "pending": AgreementStatus.SUSPENDED,  # not usable yet
    "inactive": AgreementStatus.CLOSED,
}

# A Refund object never names the payment's status: it contributes its amount once it succeeded.
REFUND_STATUSES: Mapping[str, None] = dict.fromkeys(
    ("pending", "requires_action", "succeeded", "failed", "canceled"), None
)

# How each event type is read: by the object's own status word, or a fixed status for the event.
_OBJECT = "object"
EVENT_TYPES: Mapping[str, str | PaymentStatus | AgreementStatus] = {
    "payment_intent.created": _OBJECT,
    "payment_intent.processing": _OBJECT,
    "payment_intent.requires_action": _OBJECT,
    "payment_intent.amount_capturable_updated": _OBJECT,
    "payment_intent.partially_funded": _OBJECT,
    "payment_intent.succeeded": _OBJECT,
    "payment_intent.canceled": _OBJECT,
    "payment_intent.payment_failed": P.FAILED,
    "charge.pending": _OBJECT,
    "charge.succeeded": _OBJECT,
    "charge.captured": _OBJECT,
    "charge.updated": _OBJECT,
    "charge.refunded": _OBJECT,
    "charge.failed": _OBJECT,
    "charge.expired": P.CANCELED,  # an uncaptured charge whose authorization lapsed
    "charge.refund.updated": _OBJECT,
    "refund.created": _OBJECT,
    "refund.updated": _OBJECT,
    "refund.failed": _OBJECT,
    "charge.dispute.created": _OBJECT,
    "charge.dispute.updated": _OBJECT,
    "charge.dispute.funds_withdrawn": _OBJECT,
    "charge.dispute.funds_reinstated": _OBJECT,
    "charge.dispute.closed": _OBJECT,
    "mandate.updated": _OBJECT,
    "setup_intent.succeeded": AgreementStatus.ACTIVE,
    "payment_method.detached": AgreementStatus.CLOSED,
}

SYNC_STATUS_MAPS: Mapping[str, Mapping[str, PaymentStatus | AgreementStatus]] = {
    "payment_intent": PAYMENT_INTENT_STATUSES,
    "charge": CHARGE_STATUSES,
    "mandate": MANDATE_STATUSES,
}


def sync_status(object_type: str, provider_status: str) -> PaymentStatus | AgreementStatus:
    states = lookup(SYNC_STATUS_MAPS, object_type, PROVIDER, "sync object type")
    return lookup(states, provider_status, PROVIDER, f"{object_type} status")


def thin_targets(body: bytes) -> list[FetchTarget]:
    """A thin event (``v2.core.event``) names its object in ``related_object``."""
    event = load_object(body, "stripe thin event")
    related = object_at(event, "related_object", "stripe thin event")
    return [FetchTarget(field_of(related, "type", str, "stripe thin event"),
                        field_of(related, "id", str, "stripe thin event"))]


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    """An event (``object_kind="event"``) or a fetched PaymentIntent / Charge (``"object"``)."""
    document = load_object(body, "stripe body")
    stamp = Stamp(account, source, evidence_id, observed_at)
    if object_kind == "event":
        return [_event(document, stamp)]
    if object_kind != "object":
        raise NormalizationError(f"stripe: unknown object_kind {object_kind!r}", reason="unexpected_record")
    kind = document.get("object")
    if kind == "payment_intent":
        return [_payment_intent(document, stamp, _poll_time(document), None)]
    if kind == "charge":
        return [_charge(document, stamp, unix_time(document.get("created"), "stripe charge"), None)]
    raise NormalizationError(f"stripe: cannot read a fetched {kind!r}", reason="unexpected_record")


def _event(event: Mapping[str, Any], stamp: Stamp) -> Observation:
    event_type = field_of(event, "type", str, "stripe event")
    rule = lookup(EVENT_TYPES, event_type, PROVIDER, "event type")
    data = object_at(object_at(event, "data", "stripe event"), "object", "stripe event")
    occurred = unix_time(event.get("created"), "stripe event")
    fixed = None if rule == _OBJECT else rule
    readers: Mapping[str, Callable[..., Observation]] = {
        "payment_intent": _payment_intent, "charge": _charge, "refund": _refund, "dispute": _dispute,
        "mandate": _mandate, "setup_intent": _setup_intent, "payment_method": _payment_method,
    }
    reader = lookup(readers, data.get("object"), PROVIDER, f"{event_type} object")
    observation: Observation = reader(data, stamp, occurred, fixed)
    return observation


def _observation(stamp: Stamp, **fields: Any) -> Observation:
    return Observation(provider=PROVIDER, account=stamp.account, source=stamp.source,
                       evidence_id=stamp.evidence_id, observed_at=stamp.observed_at, **fields)


def _order_ref(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    reference = metadata.get("order_ref") or metadata.get("order_id")
    return reference if isinstance(reference, str) else None


def _currency(obj: Mapping[str, Any], what: str) -> str | None:
    currency = optional_field(obj, "currency", str, what)
    return currency.upper() if currency else None


def _id_of(value: Any) -> str | None:
    """A reference that may be an id string or an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _payment_target(obj: Mapping[str, Any], what: str) -> tuple[str, str]:
    """(object_type, object_id) of the payment an object belongs to: its PaymentIntent, else its charge."""
    intent = _id_of(obj.get("payment_intent"))
    if intent:
        return "payment_intent", intent
    charge = _id_of(obj.get("charge"))
    if charge:
        return "charge", charge
    raise NormalizationError(f"{what}: no payment_intent or charge", reason="malformed_body")


def _poll_time(intent: Mapping[str, Any]) -> datetime:
    moment = intent.get("canceled_at") or intent.get("created")
    return unix_time(moment, "stripe payment_intent")


def _payment_intent(pi: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe payment_intent"
    word = field_of(pi, "status", str, what)
    status = lookup(PAYMENT_INTENT_STATUSES, word, PROVIDER, "payment_intent status")
    error = pi.get("last_payment_error")
    reason = None
    if isinstance(error, dict):
        reason = error.get("decline_code") or error.get("code")
        if word == "requires_payment_method":  # back to the start after a failed attempt
            status = P.FAILED
    if fixed is not None:
        status = fixed
    if word == "canceled" and pi.get("cancellation_reason"):
        reason = pi["cancellation_reason"]
    pi_id = field_of(pi, "id", str, what)
    received = optional_field(pi, "amount_received", int, what) or 0
    charge_id = _id_of(pi.get("latest_charge")) or pi_id
    return _observation(
        stamp, object_type="payment_intent", object_id=pi_id, kind=ObjectKind.PAYMENT, status=status,
        provider_status=word, occurred_at=occurred, reason_code=reason if isinstance(reason, str) else None,
        amount=optional_field(pi, "amount", int, what), currency=_currency(pi, what),
        captures={charge_id: received} if received > 0 else {}, order_ref=_order_ref(pi),
    )


def _charge(charge: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe charge"
    charge_id = field_of(charge, "id", str, what)
    word = field_of(charge, "status", str, what)
    status = lookup(CHARGE_STATUSES, word, PROVIDER, "charge status")
    captured = optional_field(charge, "amount_captured", int, what) or 0
    refunded = optional_field(charge, "amount_refunded", int, what) or 0
    if word == "succeeded" and charge.get("captured"):
        status = P.CAPTURED
    if word == "succeeded" and refunded > 0:
        status = P.REFUNDED if charge.get("refunded") else P.PARTIALLY_REFUNDED
    if fixed is not None:
        status = fixed
    refunds = {}
    listed = charge.get("refunds")
    for refund in listed.get("data", []) if isinstance(listed, dict) else []:
        if isinstance(refund, dict) and refund.get("status") == "succeeded":
            refunds[field_of(refund, "id", str, what)] = field_of(refund, "amount", int, what)
    object_type, object_id = _payment_target(charge, what) if charge.get("payment_intent") else (
        "charge", charge_id)
    reason = charge.get("failure_code")
    return _observation(
        stamp, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=status,
        provider_status=f"charge:{word}", occurred_at=occurred,
        reason_code=reason if isinstance(reason, str) else None,
        amount=optional_field(charge, "amount", int, what), currency=_currency(charge, what),
        captures={charge_id: captured} if captured > 0 and charge.get("captured") else {},
        refunds=refunds, order_ref=_order_ref(charge),
    )


def _refund(refund: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe refund"
    word = field_of(refund, "status", str, what)
    lookup(REFUND_STATUSES, word, PROVIDER, "refund status")
    refund_id = field_of(refund, "id", str, what)
    object_type, object_id = _payment_target(refund, what)
    reason = refund.get("failure_reason")
    return _observation(
        stamp, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=None,
        provider_status=f"refund:{word}", occurred_at=occurred,
        reason_code=reason if isinstance(reason, str) else None, currency=_currency(refund, what),
        refunds={refund_id: field_of(refund, "amount", int, what)} if word == "succeeded" else {},
    )


def _dispute(dispute: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe dispute"
    word = field_of(dispute, "status", str, what)
    status = fixed or lookup(DISPUTE_STATUSES, word, PROVIDER, "dispute status")
    object_type, object_id = _payment_target(dispute, what)
    reason = dispute.get("reason")
    return _observation(
        stamp, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=status,
        provider_status=f"dispute:{word}", occurred_at=occurred,
        reason_code=reason if isinstance(reason, str) else None, currency=_currency(dispute, what),
    )


def _mandate(mandate: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe mandate"
    word = field_of(mandate, "status", str, what)
    return _observation(
        stamp, object_type="mandate", object_id=field_of(mandate, "id", str, what),
        kind=ObjectKind.AGREEMENT, status=fixed or lookup(MANDATE_STATUSES, word, PROVIDER, "mandate status"),
        provider_status=f"mandate:{word}", occurred_at=occurred,
    )


def _setup_intent(intent: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe setup_intent"
    method = _id_of(intent.get("payment_method"))
    if method is None:
        raise NormalizationError(f"{what}: no payment_method", reason="malformed_body")
    return _observation(
        stamp, object_type="payment_method", object_id=method, kind=ObjectKind.AGREEMENT, status=fixed,
        provider_status=f"setup_intent:{field_of(intent, 'status', str, what)}", occurred_at=occurred,
    )


def _payment_method(method: Mapping[str, Any], stamp: Stamp, occurred: datetime, fixed: Any) -> Observation:
    what = "stripe payment_method"
    return _observation(
        stamp, object_type="payment_method", object_id=field_of(method, "id", str, what),
        kind=ObjectKind.AGREEMENT, status=fixed, provider_status="payment_method:detached", occurred_at=occurred,
    )
