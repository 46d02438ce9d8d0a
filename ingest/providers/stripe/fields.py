"""Reading Stripe objects: the fields every Stripe reader shares (ids, the payment an object belongs to, the
merchant's order reference) and the one way a reader turns a provider word into ours.

A word with no explicit mapping raises :class:`UnknownProviderStatus` naming it (``dispute.status:…``), so the
DLQ alert says which word Stripe added; a reader never guesses. A mapped event that names nothing we track
(a Checkout Session without a PaymentIntent, a payment method saved to no customer) is :func:`nothing`: no
observation, counted like a catalog-ignored type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from ingest.providers.catalog import count_ignored
from ingest.providers.parse_support import Stamp, optional_field
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.observation import Observation

PROVIDER = "stripe"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Seen:
    """What every observation read from one event (or one fetched object) shares."""

    stamp: Stamp
    occurred: datetime  # provider time: the event's ``created`` (a fetched object's own time)
    event_type: str | None  # None for a fetched object


def observation(seen: Seen, **fields: Any) -> Observation:
    stamp = seen.stamp
    return Observation(provider=PROVIDER, account=stamp.account, source=stamp.source,
                       evidence_id=stamp.evidence_id, observed_at=stamp.observed_at, occurred_at=seen.occurred,
                       **fields)


def word(mapping: Mapping[str, T], value: Any, what: str) -> T:
    """Our meaning of a Stripe word (``what`` names the field, e.g. ``dispute.status``); never a guess."""
    if isinstance(value, str) and value in mapping:
        return mapping[value]
    raise UnknownProviderStatus(f"{PROVIDER}: no mapping for {what} {value!r}", provider=PROVIDER,
                                word=f"{what}:{value}")


def nothing(seen: Seen) -> list[Observation]:
    """A mapped event that names no payment or agreement we track: no observation, counted as ignored."""
    count_ignored(PROVIDER, seen.event_type or "object")
    return []


def id_of(value: Any) -> str | None:
    """A reference that may be an id string or an expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return str(value["id"])
    return None


def payment_target(obj: Mapping[str, Any], what: str) -> tuple[str, str]:
    """(object_type, object_id) of the payment an object belongs to: its PaymentIntent, else its charge."""
    intent = id_of(obj.get("payment_intent"))
    if intent:
        return "payment_intent", intent
    charge = id_of(obj.get("charge"))
    if charge:
        return "charge", charge
    raise NormalizationError(f"{what}: names neither a payment_intent nor a charge", reason="malformed_body")


def order_ref(obj: Mapping[str, Any]) -> str | None:
    """``metadata.order_ref`` (or ``metadata.order_id``): where merchants put their order's reference."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    reference = metadata.get("order_ref") or metadata.get("order_id")
    return reference if isinstance(reference, str) else None


def currency(obj: Mapping[str, Any], what: str) -> str | None:
    code = optional_field(obj, "currency", str, what)
    return code.upper() if code else None


def text(obj: Mapping[str, Any], name: str) -> str | None:
    """An optional string field; anything else (null, absent) is None."""
    value = obj.get(name)
    return value if isinstance(value, str) and value else None
