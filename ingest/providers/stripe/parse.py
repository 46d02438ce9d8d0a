"""Stripe: events (pushed, or found by the Events-list sweep) and fetched PaymentIntents / Charges →
observations, driven by the catalog (``catalog.json``: every event type a webhook endpoint accepts, each with
its decision).

* A type the catalog does not know is a new Stripe type: :class:`UnknownProviderStatus` (DLQ + alert).
* A type the catalog ignores gives no observation and is counted (``paystream_events_ignored_total``).
* A mapped type is read by the reader of its data object: payments.py (PaymentIntent, Charge, Refund,
  Dispute), checkout.py (Checkout Session), risk.py (early fraud warning, review), agreements.py (mandate,
  SetupIntent, PaymentMethod).

Payment key: ``payment_intent:{pi_…}`` — charges, refunds, disputes, risk signals and Checkout Sessions are
observed under the PaymentIntent they belong to (``charge:{ch_…}`` only for a charge without one).

Provider time: ``event.created`` for events. A fetched PaymentIntent has no "updated" time, so a poll uses
``canceled_at`` or ``created``; a poll and a push therefore never race on time, and the join's transition
table plus progress rank decide (a poll that sees ``succeeded`` moves ``authorized`` forward; one that sees
an older status is a stale regression).

``order_ref`` comes from ``metadata.order_ref`` (or ``metadata.order_id``; a Checkout Session's
``client_reference_id`` otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ingest.providers.catalog import load_catalog
from ingest.providers.parse_support import FetchTarget, Stamp, field_of, load_object, object_at, unix_time
from ingest.providers.stripe import agreements, checkout, payments, risk
from ingest.providers.stripe.fields import PROVIDER, Seen, word
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import AgreementStatus, PaymentStatus, Source

Reader = Callable[[Mapping[str, Any], Seen], list[Observation]]

# The reader of each data object a mapped event type carries.
READERS: Mapping[str, Reader] = {
    "payment_intent": payments.payment_intent,
    "charge": payments.charge,
    "refund": payments.refund,
    "dispute": payments.dispute,
    "checkout.session": checkout.session,
    "radar.early_fraud_warning": risk.early_fraud_warning,
    "review": risk.review,
    "mandate": agreements.mandate,
    "setup_intent": agreements.setup_intent,
    "payment_method": agreements.payment_method,
}

SYNC_STATUS_MAPS: Mapping[str, Mapping[str, PaymentStatus | AgreementStatus]] = {
    "payment_intent": payments.PAYMENT_INTENT_STATUSES,
    "charge": payments.CHARGE_STATUSES,
    "mandate": agreements.MANDATE_STATUSES,
}


def sync_status(object_type: str, provider_status: str) -> PaymentStatus | AgreementStatus:
    states = word(SYNC_STATUS_MAPS, object_type, "sync object_type")
    return word(states, provider_status, f"{object_type}.status")


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
        return _event(document, stamp)
    if object_kind != "object":
        raise NormalizationError(f"stripe: unknown object_kind {object_kind!r}", reason="unexpected_record")
    kind = document.get("object")
    if kind == "payment_intent":
        return payments.payment_intent(document, Seen(stamp, _poll_time(document), None))
    if kind == "charge":
        return payments.charge(document, Seen(stamp, unix_time(document.get("created"), "stripe charge"), None))
    raise NormalizationError(f"stripe: cannot read a fetched {kind!r}", reason="unexpected_record")


def _event(event: Mapping[str, Any], stamp: Stamp) -> list[Observation]:
    event_type = field_of(event, "type", str, "stripe event")
    if load_catalog(PROVIDER).ignored(event_type):  # raises for a type the catalog does not know
        return []
    data = object_at(object_at(event, "data", "stripe event"), "object", "stripe event")
    kind = data.get("object")
    reader = READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise NormalizationError(f"stripe: a {event_type} event carrying a {kind!r} object", reason="unexpected_record")
    return reader(data, Seen(stamp, unix_time(event.get("created"), "stripe event"), event_type))


def _poll_time(intent: Mapping[str, Any]) -> datetime:
    moment = intent.get("canceled_at") or intent.get("created")
    return unix_time(moment, "stripe payment_intent")
