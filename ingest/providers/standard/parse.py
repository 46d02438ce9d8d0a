"""Standard Webhooks senders: the account's ``status_map`` says what each event type means.

A sender is any service signing with the Standard Webhooks spec; its payloads are its own, so paystream
reads this documented shape (the spec's recommended ``type`` / ``timestamp`` / ``data`` envelope)::

    {
      "type": "payment.succeeded",            # looked up in AccountConfig.status_map
      "timestamp": "2024-05-01T12:00:00Z",    # provider time of the event (RFC 3339)
      "data": {
        "id": "pay_123",                      # required: the object id
        "object_type": "payment",             # optional; default "payment" ("agreement" for agreement statuses)
        "amount": 1000, "currency": "EUR",    # optional, minor units
        "captured_amount": 1000,              # optional running totals, minor units: what was captured,
        "refunded_amount": 0,                 # and what went back so far (it may fall: a refund failed)
        "reason_code": "…", "order_ref": "…"  # optional
      }
    }

``status_map`` (TOML, per account): event type → a canonical status (``"captured"``, ``"active"``, …),
``"amount_only"`` (the event carries amounts but no status) or ``"ignore"`` (deliberately dropped).
An event type missing from the map is an :class:`UnknownProviderStatus`: it goes to the DLQ.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingest.providers.catalog import count_ignored
from ingest.providers.parse_support import field_of, iso_time, load_object, lookup, object_at, optional_field
from paystream.errors import NormalizationError
from schemas.observation import Movement, Observation
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

PROVIDER = "standard"
AMOUNT_ONLY = "amount_only"
IGNORE = "ignore"


def canonical(word: str) -> PaymentStatus | AgreementStatus | None:
    """A ``status_map`` value as a status; None for ``amount_only``."""
    if word == AMOUNT_ONLY:
        return None
    for enum in (PaymentStatus, AgreementStatus):
        try:
            return enum(word)
        except ValueError:
            continue
    raise NormalizationError(f"standard: status_map value {word!r} is not a canonical status",
                             reason="bad_status_map")


def sync_status(object_type: str, provider_status: str, status_map: Mapping[str, str]) -> (
        PaymentStatus | AgreementStatus):
    """A checkout's synchronous result names an event type of the same map."""
    status = canonical(lookup(status_map, provider_status, PROVIDER, "event type"))
    if status is None:
        raise NormalizationError(f"standard: {provider_status!r} maps to no status", reason="unexpected_record")
    return status


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
    status_map: Mapping[str, str],
) -> list[Observation]:
    if object_kind != "event":
        raise NormalizationError("standard: only pushed events can be read", reason="unexpected_record")
    event = load_object(body, "standard event")
    what = "standard event"
    event_type = field_of(event, "type", str, what)
    word = lookup(status_map, event_type, PROVIDER, "event type")
    if word == IGNORE:  # the account's status_map is its catalog: ignored on purpose, counted
        count_ignored(PROVIDER, event_type)
        return []
    status = canonical(word)
    data = object_at(event, "data", what)
    object_id = field_of(data, "id", str, what)
    default_type = "agreement" if isinstance(status, AgreementStatus) else "payment"
    object_type = optional_field(data, "object_type", str, what) or default_type
    currency = optional_field(data, "currency", str, what)
    return [Observation(
        provider=PROVIDER, account=account, object_type=object_type, object_id=object_id,
        kind=ObjectKind.AGREEMENT if isinstance(status, AgreementStatus) else ObjectKind.PAYMENT,
        status=status, provider_status=event_type, source=source, evidence_id=evidence_id,
        occurred_at=iso_time(event.get("timestamp"), what), observed_at=observed_at,
        reason_code=optional_field(data, "reason_code", str, what),
        amount=optional_field(data, "amount", int, what), currency=currency.upper() if currency else None,
        captures=_captured(data, f"{object_id}:captured", what),
        refunded_total=optional_field(data, "refunded_amount", int, what),
        order_ref=optional_field(data, "order_ref", str, what),
    )]


def _captured(data: Mapping[str, Any], key: str, what: str) -> dict[str, Movement]:
    """A running total of captures: one movement that only grows (the newest report wins)."""
    value = optional_field(data, "captured_amount", int, what)
    return {key: Movement(value)} if value else {}
