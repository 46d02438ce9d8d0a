"""One uniform face over the provider parsers (``ingest/providers/*/parse.py``), for the processors and for the
routing of records to payments (:mod:`ingest.providers.routing`).

The parsers differ only where providers do: Standard Webhooks needs the account's ``status_map``, and
only providers with thin pushes or hints can name fetch targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from ingest.providers.adyen import parse as adyen
from ingest.providers.amazon_pay import parse as amazon_pay
from ingest.providers.mollie import parse as mollie
from ingest.providers.parse_support import FetchTarget
from ingest.providers.standard import parse as standard
from ingest.providers.stripe import parse as stripe
from paystream.config import AccountConfig
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import AgreementStatus, PaymentStatus, Source

# Providers whose objects the fetcher can get (stale polls are only scheduled for these).
POLLABLE = frozenset({"amazon_pay", "stripe", "mollie"})
# The object types whose fetch reads a payment's own status: stale polls are armed only for these. A Refund, a
# dispute or an order fetched because a thin push named it is filed under its payment's key, never its own.
POLLED_OBJECT_TYPES: Mapping[str, frozenset[str]] = {
    "amazon_pay": amazon_pay.PAYMENT_OBJECT_TYPES, "stripe": frozenset({"payment_intent"}),
    "mollie": mollie.PAYMENT_OBJECT_TYPES,
}
# Providers that push (so a status first seen by a stale poll or sweep is a missed webhook).
PUSHING = frozenset({"amazon_pay", "stripe", "adyen", "mollie", "standard"})
# Object types whose statuses are agreement statuses (stored payment methods, mandates): they never wait for
# news the way a payment does, so no stale polls are armed for them even before their first observation.
AGREEMENT_OBJECT_TYPES = frozenset({"charge_permission", "mandate", "recurring_contract", "agreement",
                                    "subscription", "payment_method"})


def _unknown(provider: str) -> NormalizationError:
    return NormalizationError(f"no parser for provider {provider!r}", reason="unknown_provider")


class ParseFunction(Protocol):
    def __call__(
        self, body: bytes, *, account: str, source: Source, evidence_id: str, observed_at: datetime,
        object_kind: str,
    ) -> list[Observation]: ...


_PARSERS: Mapping[str, ParseFunction] = {
    "amazon_pay": amazon_pay.parse, "stripe": stripe.parse, "adyen": adyen.parse, "mollie": mollie.parse,
}


def parse(
    provider: str,
    body: bytes,
    *,
    account: str,
    account_config: AccountConfig | None,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    if provider == "standard":
        return standard.parse(
            body, account=account, source=source, evidence_id=evidence_id, observed_at=observed_at,
            object_kind=object_kind, status_map=account_config.status_map if account_config else {},
        )
    if provider not in _PARSERS:
        raise _unknown(provider)
    return _PARSERS[provider](
        body, account=account, source=source, evidence_id=evidence_id, observed_at=observed_at,
        object_kind=object_kind,
    )


def thin_targets(provider: str, body: bytes) -> list[FetchTarget]:
    """What a thin push or a hint names; providers without thin pushes have none."""
    readers = {"amazon_pay": amazon_pay.thin_targets, "stripe": stripe.thin_targets,
               "mollie": mollie.thin_targets}
    if provider not in readers:
        raise NormalizationError(f"{provider}: sends no thin pushes or hints", reason="unexpected_record")
    return readers[provider](body)


def sync_status(
    provider: str, object_type: str, provider_status: str, account_config: AccountConfig | None
) -> PaymentStatus | AgreementStatus:
    """The canonical status of a provider word reported by a checkout (POST /v1/observations)."""
    if provider == "standard":
        return standard.sync_status(object_type, provider_status, account_config.status_map if account_config
                                    else {})
    readers = {"amazon_pay": amazon_pay.sync_status, "stripe": stripe.sync_status, "adyen": adyen.sync_status,
               "mollie": mollie.sync_status}
    if provider not in readers:
        raise _unknown(provider)
    return readers[provider](object_type, provider_status)
