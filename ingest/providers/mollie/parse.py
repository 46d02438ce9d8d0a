"""Mollie: the webhook is an unsigned hint (``id=tr_…``); the fetched Payment is what gets parsed.

Payment key: ``payment:{tr_…}``. Mollie reports refunds, captures and chargebacks on the Payment only as
running totals (``amountRefunded``, ``amountCaptured``, ``amountChargedBack``), so they are keyed by
``{id}:refunded`` / ``{id}:captured``: the join keeps the larger value per key, and a total only grows.
A payment whose status is still ``paid`` but that has a charged-back amount is ``charged_back``.

Provider time: the timestamp of the current status (``paidAt``, ``canceledAt``, ``expiredAt``, …), so
repeated polls of an unchanged payment collapse into one observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from ingest.providers.parse_support import (
    FetchTarget,
    Stamp,
    field_of,
    iso_time,
    load_object,
    lookup,
    minor_units,
)
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import ObjectKind, PaymentStatus, Source

PROVIDER = "mollie"
P = PaymentStatus

PAYMENT_STATUSES: Mapping[str, PaymentStatus] = {
    "open": P.PENDING,
    "pending": P.PENDING,
    "authorized": P.AUTHORIZED,
    "paid": P.CAPTURED,
    "canceled": P.CANCELED,
    "expired": P.FAILED,  # the shopper never completed the payment (or an authorization lapsed)
    "failed": P.FAILED,
}

# Which timestamp dates each status.
STATUS_TIMES: Mapping[str, str] = {
    "open": "createdAt",
    "pending": "createdAt",
    "authorized": "authorizedAt",
    "paid": "paidAt",
    "canceled": "canceledAt",
    "expired": "expiredAt",
    "failed": "failedAt",
}

# Resource id prefixes a hint may name → the object type the fetcher gets.
HINT_PREFIXES: Mapping[str, str] = {"tr_": "payment"}


def sync_status(object_type: str, provider_status: str) -> PaymentStatus:
    if object_type != "payment":
        raise NormalizationError(f"mollie: sync observations are for object_type 'payment', not {object_type!r}",
                                 reason="unexpected_record")
    return lookup(PAYMENT_STATUSES, provider_status, PROVIDER, "payment status")


def thin_targets(body: bytes) -> list[FetchTarget]:
    """The resource a hint names: a form body ``id=tr_…`` (or JSON ``{"id": "tr_…"}``)."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        resource_id = field_of(load_object(body, "mollie hint"), "id", str, "mollie hint")
    else:
        values = parse_qs(text).get("id", [])
        if len(values) != 1 or not values[0]:
            raise NormalizationError("mollie hint: expected exactly one id=…", reason="malformed_body")
        resource_id = values[0]
    object_type = lookup(HINT_PREFIXES, resource_id[:3], PROVIDER, "hint resource id prefix")
    return [FetchTarget(object_type, resource_id)]


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    if object_kind != "object":
        raise NormalizationError("mollie: webhooks are hints and are fetched, not parsed",
                                 reason="unexpected_record")
    payment = load_object(body, "mollie payment")
    stamp = Stamp(account, source, evidence_id, observed_at)
    return [_payment(payment, stamp)]


def _money(payment: Mapping[str, Any], name: str, what: str) -> tuple[int, str] | None:
    money = payment.get(name)
    if money is None:
        return None
    if not isinstance(money, dict):
        raise NormalizationError(f"{what}: {name} is not an object", reason="malformed_body")
    currency = field_of(money, "currency", str, what).upper()
    return minor_units(field_of(money, "value", str, what), currency, f"{what}.{name}"), currency


def _payment(payment: Mapping[str, Any], stamp: Stamp) -> Observation:
    what = "mollie payment"
    if payment.get("resource", "payment") != "payment":
        raise NormalizationError(f"mollie: cannot read a {payment.get('resource')!r}", reason="unexpected_record")
    payment_id = field_of(payment, "id", str, what)
    word = field_of(payment, "status", str, what)
    status = lookup(PAYMENT_STATUSES, word, PROVIDER, "payment status")
    occurred = iso_time(payment.get(STATUS_TIMES[word]) or payment.get("createdAt"), what)
    amount = _money(payment, "amount", what)
    captured = _money(payment, "amountCaptured", what)
    refunded = _money(payment, "amountRefunded", what)
    charged_back = _money(payment, "amountChargedBack", what)
    reason = None
    if word == "paid" and charged_back and charged_back[0] > 0:
        status, reason = P.CHARGED_BACK, "chargeback"
    captures: dict[str, int] = {}
    if captured and captured[0] > 0:
        captures[f"{payment_id}:captured"] = captured[0]
    elif word == "paid" and amount:
        captures[f"{payment_id}:captured"] = amount[0]
    details = payment.get("details")
    if word == "failed" and isinstance(details, dict) and isinstance(details.get("failureReason"), str):
        reason = details["failureReason"]
    metadata = payment.get("metadata")
    order_ref = metadata.get("order_ref") if isinstance(metadata, dict) else None
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="payment", object_id=payment_id,
        kind=ObjectKind.PAYMENT, status=status, provider_status=word, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=occurred, observed_at=stamp.observed_at, reason_code=reason,
        amount=amount[0] if amount else None, currency=amount[1] if amount else None, captures=captures,
        refunds={f"{payment_id}:refunded": refunded[0]} if refunded and refunded[0] > 0 else {},
        order_ref=order_ref if isinstance(order_ref, str) else None,
    )
