"""Amazon Pay (API v2): IPNs → fetch targets; fetched Charge, Refund, Dispute and Charge Permission → observations.

Amazon Pay pushes are thin: an IPN (over SNS) names an object by ``ObjectType`` and ``ObjectId``, and every
``ObjectType`` x ``NotificationType`` pair the docs list is decided in ``catalog.json`` (all of them: fetch the
object). :func:`thin_targets` reads the IPN; :func:`parse` reads what the fetcher got (Get Charge, Get Refund,
Get Dispute, Get Charge Permission).

Refunds and disputes are observed under their Charge (``charge:{chargeId}``), each by its own id with its own
state, although the fetch that found them was asked for the refund or dispute id (the IPN names only that).
So every payment observation here names the charge: :data:`PAYMENT_OBJECT_TYPES` tells the processor which
fetched object types read a payment's status (a refund's or dispute's fetch chain must not wait for one).

Reason codes (``statusDetails.reasonCode``: ``ExpiredUnused``, ``AmazonCanceled``, ``SoftDeclined``,
``MerchantResponseRequired``, ...) are carried verbatim as ``reason_code``: the state alone decides the canonical
status, so a new reason code cannot mislead it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from ingest.providers.catalog import load_catalog
from ingest.providers.parse_support import (
    FetchTarget,
    Stamp,
    field_of,
    iso_time,
    load_object,
    minor_units,
    object_at,
)
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.observation import Dispute, Movement, Observation
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, Source

PROVIDER = "amazon_pay"
T = TypeVar("T")

# Fetched object types whose poll reads a payment's status. A refund or dispute is fetched by its own id but
# observed under its charge: a stale-poll chain keyed by the refund would wait for a status it never gets.
PAYMENT_OBJECT_TYPES = frozenset({"charge"})

CHARGE_STATES: Mapping[str, PaymentStatus] = {
    "Pending": PaymentStatus.PENDING,
    "AuthorizationInitiated": PaymentStatus.PENDING,
    "Authorized": PaymentStatus.AUTHORIZED,
    # The capture was requested but not settled yet: the funds are still only authorized.
    "CaptureInitiated": PaymentStatus.AUTHORIZED,
    "Captured": PaymentStatus.CAPTURED,
    # Also a charge that expired unused 30 days after authorization (reason code ExpiredUnused).
    "Canceled": PaymentStatus.CANCELED,
    "Declined": PaymentStatus.FAILED,
}

# A Refund never says the charge's overall status: it is a movement by its own id, counted once Refunded.
REFUND_STATES: Mapping[str, MoneyState] = {
    "RefundInitiated": MoneyState.PENDING,
    "Refunded": MoneyState.SUCCEEDED,
    "Declined": MoneyState.FAILED,
}

# Dispute states (Get Dispute ``statusDetails.state``); a finished one is decided by its ``resolution``.
DISPUTE_OPEN_STATES = frozenset({"UnderReview", "ActionRequired"})
DISPUTE_FINISHED_STATES = frozenset({"Resolved", "Closed"})
DISPUTE_RESOLUTIONS: Mapping[str, DisputeState] = {
    "BuyerWon": DisputeState.LOST,  # the money went back to the buyer
    "MerchantWon": DisputeState.WON,
    # Closed without fault on the merchant's side (the buyer withdrew, or Amazon Pay covered the claim): the
    # merchant keeps the money.
    "NoFault": DisputeState.WON,
}
# The status word a dispute observation carries; the join refines CAPTURED into the charge's money status.
DISPUTE_STATUS: Mapping[DisputeState, PaymentStatus] = {
    DisputeState.OPEN: PaymentStatus.DISPUTED,
    DisputeState.LOST: PaymentStatus.CHARGED_BACK,
    DisputeState.WON: PaymentStatus.CAPTURED,
}

CHARGE_PERMISSION_STATES: Mapping[str, AgreementStatus] = {
    "Chargeable": AgreementStatus.ACTIVE,
    "NonChargeable": AgreementStatus.SUSPENDED,
    "Closed": AgreementStatus.CLOSED,
}

# IPN ObjectType → the object type the fetcher gets (ingest/providers/amazon_pay/client.py RESOURCES).
IPN_OBJECT_TYPES: Mapping[str, str] = {
    "CHARGE_PERMISSION": "charge_permission",
    "CHARGE": "charge",
    "REFUND": "refund",
    "CHARGEBACK": "dispute",  # the IPN's ObjectId is the dispute id (Get Dispute)
}

SYNC_STATUS_MAPS: Mapping[str, Mapping[str, PaymentStatus | AgreementStatus]] = {
    "charge": CHARGE_STATES,
    "charge_permission": CHARGE_PERMISSION_STATES,
}


def known(mapping: Mapping[str, T], word: Any, what: str) -> T:
    """The explicit decision for a provider word; a word without one is Amazon Pay's new word (DLQ + alert)."""
    if isinstance(word, str) and word in mapping:
        return mapping[word]
    raise UnknownProviderStatus(f"{PROVIDER}: no mapping for {what} {word!r}", provider=PROVIDER,
                                word=str(word))


def sync_status(object_type: str, provider_status: str) -> PaymentStatus | AgreementStatus:
    """The status a checkout's synchronous result names (POST /v1/observations)."""
    if object_type not in SYNC_STATUS_MAPS:
        raise NormalizationError(f"{PROVIDER}: sync observations are for a charge or charge_permission, not "
                                 f"{object_type!r}", reason="unexpected_record")
    return known(SYNC_STATUS_MAPS[object_type], provider_status, f"{object_type} state")


def thin_targets(body: bytes) -> list[FetchTarget]:
    """The object an IPN names. Accepts the SNS envelope (``Message`` holds the IPN JSON) or the IPN itself.

    ``ObjectType`` and ``NotificationType`` are each checked against the catalog, so a new value of either is
    named on its own in the DLQ record and the alert."""
    envelope = load_object(body, "amazon_pay IPN")
    message: dict[str, Any] = envelope
    if "Message" in envelope:
        message = load_object(field_of(envelope, "Message", str, "amazon_pay SNS").encode(), "amazon_pay IPN")
    object_type = field_of(message, "ObjectType", str, "amazon_pay IPN")
    notification = field_of(message, "NotificationType", str, "amazon_pay IPN")
    object_id = field_of(message, "ObjectId", str, "amazon_pay IPN")
    catalog = load_catalog(PROVIDER)
    for word, position, what in ((object_type, 0, "ObjectType"), (notification, 1, "NotificationType")):
        if word not in {name.split(":")[position] for name in catalog.entries}:
            raise UnknownProviderStatus(f"{PROVIDER}: IPN {what} {word!r} is not in the catalog", provider=PROVIDER,
                                        word=word, reason="unknown_event_type")
    name = f"{object_type}:{notification}"
    if catalog.ignored(name):
        return []
    return [FetchTarget(known(IPN_OBJECT_TYPES, object_type, "IPN ObjectType"), object_id)]


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    """A fetched Dispute, Refund, Charge or Charge Permission (recognised by its id fields) → one observation."""
    if object_kind != "object":
        raise NormalizationError(
            "amazon_pay: pushes are thin IPNs and are fetched, not parsed", reason="unexpected_record"
        )
    resource = load_object(body, "amazon_pay object")
    stamp = Stamp(account, source, evidence_id, observed_at)
    # Most specific first: a Dispute and a Refund name their chargeId, a Charge its chargePermissionId.
    if "disputeId" in resource:
        return [_dispute(resource, stamp)]
    if "refundId" in resource:
        return [_refund(resource, stamp)]
    if "chargeId" in resource:
        return [_charge(resource, stamp)]
    if "chargePermissionId" in resource:
        return [_charge_permission(resource, stamp)]
    raise NormalizationError("amazon_pay: object is not a Charge, Refund, Dispute or Charge Permission",
                             reason="malformed_body")


def _status_details(resource: Mapping[str, Any], what: str) -> tuple[dict[str, Any], str, str | None, datetime]:
    details = object_at(resource, "statusDetails", what)
    state = field_of(details, "state", str, what)
    reason = details.get("reasonCode")
    if reason is None and isinstance(details.get("reasons"), list):
        # A Charge Permission lists its reasons; an agreement event keeps every one of them.
        codes = [item.get("reasonCode") for item in details["reasons"] if isinstance(item, dict)]
        reason = ",".join(code for code in codes if isinstance(code, str)) or None
    updated = details.get("lastUpdatedTimestamp") or resource.get("creationTimestamp")
    return details, state, reason if isinstance(reason, str) else None, amazon_time(updated, what)


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


def _optional_text(resource: Mapping[str, Any], name: str) -> str | None:
    value = resource.get(name)
    return value if isinstance(value, str) and value else None


def _charge(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay Charge"
    charge_id = field_of(resource, "chargeId", str, what)
    _details, state, reason, updated = _status_details(resource, what)
    status = known(CHARGE_STATES, state, "Charge state")
    amount = _price(resource, "chargeAmount", what)
    captured = _price(resource, "captureAmount", what)
    captures = {charge_id: Movement(captured[0])} if captured and captured[0] > 0 and state == "Captured" else {}
    expires = resource.get("expirationTimestamp")
    # refundedAmount is not read: it is dated by the charge's last state change, which may predate refunds the
    # Refund IPNs name by id (each is fetched and counted on its own).
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge", object_id=charge_id,
        kind=ObjectKind.PAYMENT, status=status, provider_status=state, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=updated, observed_at=stamp.observed_at,
        reason_code=reason, amount=amount[0] if amount else None, currency=amount[1] if amount else None,
        captures=captures, order_ref=_order_ref(resource),
        agreement_ref=_optional_text(resource, "chargePermissionId"),
        authorization_expires_at=None if expires is None else amazon_time(expires, f"{what}.expirationTimestamp"),
    )


def _refund(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay Refund"
    refund_id = field_of(resource, "refundId", str, what)
    _details, state, reason, updated = _status_details(resource, what)
    refunded = _price(resource, "refundAmount", what)
    movement = Movement(refunded[0] if refunded else None, known(REFUND_STATES, state, "Refund state"))
    # No status word: a refund says nothing of the charge's status (the join derives it from the amounts).
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge",
        object_id=field_of(resource, "chargeId", str, what), kind=ObjectKind.PAYMENT, status=None,
        provider_status=f"Refund:{state}", source=stamp.source, evidence_id=stamp.evidence_id,
        occurred_at=updated, observed_at=stamp.observed_at, reason_code=reason,
        currency=refunded[1] if refunded else None, refunds={refund_id: movement},
    )


def _dispute(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay Dispute"
    dispute_id = field_of(resource, "disputeId", str, what)
    details, state, reason, updated = _status_details(resource, what)
    provider_status = f"Dispute:{state}"
    if state in DISPUTE_OPEN_STATES:
        dispute_state = DisputeState.OPEN
    elif state in DISPUTE_FINISHED_STATES:
        resolution = details.get("resolution")
        if resolution is None:
            raise NormalizationError(f"{what} {dispute_id}: state {state} without a resolution",
                                     reason="malformed_body")
        dispute_state = known(DISPUTE_RESOLUTIONS, resolution, "Dispute resolution")
        provider_status = f"{provider_status}:{resolution}"
    else:
        raise UnknownProviderStatus(f"{PROVIDER}: no mapping for Dispute state {state!r}", provider=PROVIDER,
                                    word=state)
    disputed = _price(resource, "disputeAmount", what)
    dispute = Dispute(disputed[0] if disputed else None, dispute_state, _optional_text(resource, "filingReason"))
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge",
        object_id=field_of(resource, "chargeId", str, what), kind=ObjectKind.PAYMENT,
        status=DISPUTE_STATUS[dispute_state], provider_status=provider_status, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=updated, observed_at=stamp.observed_at, reason_code=reason,
        currency=disputed[1] if disputed else None, disputes={dispute_id: dispute},
    )


def _charge_permission(resource: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "amazon_pay ChargePermission"
    _details, state, reason, updated = _status_details(resource, what)
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="charge_permission",
        object_id=field_of(resource, "chargePermissionId", str, what), kind=ObjectKind.AGREEMENT,
        status=known(CHARGE_PERMISSION_STATES, state, "Charge Permission state"),
        provider_status=state, source=stamp.source, evidence_id=stamp.evidence_id, occurred_at=updated,
        observed_at=stamp.observed_at, reason_code=reason, order_ref=_order_ref(resource),
    )
