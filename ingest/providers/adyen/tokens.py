"""Adyen Tokenization webhooks (the recurring token life cycle) → agreement observations.

Adyen publishes them apart from the standard webhooks, in ``Adyen/adyen-openapi``
``json/TokenizationNotification-v1.json``: one event per request, no ``notificationItems`` batch::

    {"type": "recurring.token.created", "eventId": "QBQQ9DLNRHHKGK38", "createdAt": "2025-06-30T16:40:23+02:00",
     "environment": "test", "version": "1",
     "data": {"storedPaymentMethodId": "M5N7TQ4TG5PFWR50", "shopperReference": "...", "merchantAccount": "...",
              "type": "visastandarddebit", "operation": "created"}}

``data.operation`` is documented "for audit purposes" and absent from ``recurring.token.disabled``. The
signature is not in the body but in the ``HmacSignature`` header (see :mod:`ingest.providers.adyen.verify`).

What each type is (an agreement outcome, and why) is the catalog (``catalog.json``, the ``recurring.token.*``
entries); the status each one reports is :data:`STATUSES` here. A type the catalog does not know is a new Adyen
word: :class:`UnknownProviderStatus` (the DLQ, with an alert that names it).

Webhooks-v1 documents two eventCodes whose bodies have this shape too (its examples: ``ach.notificationOfChange``
and ``eft.notificationOfChange``); the catalog decides them under their eventCode (:data:`EVENTCODE_TYPES`).

Agreement key: ``recurring_contract:{storedPaymentMethodId}``, the key a ``RECURRING_CONTRACT`` notification for
the same token uses (Adyen's ``storedPaymentMethodId`` is what its older API calls the recurring detail
reference; its own examples of both name ``M5N7TQ4TG5PFWR50``), so both land on one agreement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from ingest.providers.catalog import load_catalog
from ingest.providers.parse_support import Stamp, field_of, iso_time, object_at
from paystream.errors import ConfigurationError, NormalizationError, UnknownProviderStatus
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind

PROVIDER = "adyen"
OBJECT_TYPE = "recurring_contract"
CATALOG = load_catalog(PROVIDER)

STATUSES: Mapping[str, AgreementStatus] = {
    "recurring.token.created": AgreementStatus.ACTIVE,
    "recurring.token.updated": AgreementStatus.ACTIVE,  # e.g. a card network's new expiry: still usable
    "recurring.token.alreadyExisting": AgreementStatus.ACTIVE,  # the existing token is the one in use
    "recurring.token.disabled": AgreementStatus.CLOSED,  # nothing can run on it any more
}

# The catalog names webhook types with dots and eventCodes in UPPER_SNAKE: the typed entries are these.
TYPES: frozenset[str] = frozenset(name for name in CATALOG.names() if "." in name)
if set(STATUSES) != TYPES - set(CATALOG.names("ignore")):
    raise ConfigurationError(f"adyen: catalog and token STATUSES disagree on {sorted(set(STATUSES) ^ TYPES)}")

# Webhooks-v1 eventCodes sent as {type, data} bodies, by their `type` (Webhooks-v1 components.examples).
EVENTCODE_TYPES: Mapping[str, str] = {
    "ach.notificationOfChange": "ACH_NOTIFICATION_OF_CHANGE",
    "eft.notificationOfChange": "DIRECT_DEBIT_NOTICE_OF_CHANGE_NOTIFICATION",
}
if not set(EVENTCODE_TYPES.values()) <= set(CATALOG.names("ignore")):
    raise ConfigurationError("adyen: a {type, data} eventCode is no longer ignored; tokens.parse has no rule for it")


def is_type_webhook(document: object) -> TypeGuard[dict[str, Any]]:
    """A ``{type, data}`` webhook, signed in its header: not a standard batch, nor one of its items."""
    return (isinstance(document, dict) and "type" in document and "notificationItems" not in document
            and "eventCode" not in document)


def parse(document: Mapping[str, Any], stamp: Stamp) -> list[Observation]:
    what = "adyen token webhook"
    kind = field_of(document, "type", str, what)
    if kind in EVENTCODE_TYPES and CATALOG.ignored(EVENTCODE_TYPES[kind]):
        return []
    if kind not in TYPES:
        raise UnknownProviderStatus(f"adyen: webhook type {kind!r} is not in the catalog", provider=PROVIDER,
                                    word=kind, reason="unknown_event_type")
    if CATALOG.ignored(kind):
        return []
    data = object_at(document, "data", what)
    token = field_of(data, "storedPaymentMethodId", str, what).strip()
    if not token:
        raise NormalizationError(f"{what}: empty data.storedPaymentMethodId", reason="malformed_body")
    operation = data.get("operation")
    reason = operation.strip() if isinstance(operation, str) and operation.strip() else kind.rsplit(".", 1)[-1]
    return [Observation(
        provider=PROVIDER, account=stamp.account, object_type=OBJECT_TYPE, object_id=token,
        kind=ObjectKind.AGREEMENT, status=STATUSES[kind], provider_status=kind, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=iso_time(document.get("createdAt"), what),
        observed_at=stamp.observed_at, reason_code=reason,
    )]
