"""What a verifier receives and what it hands back.

A verifier sees only raw bytes and headers (never a parsed body before the signature is checked) and
returns :class:`VerifiedDelivery` values: the exact bytes that will be published to
``payments.inbox.v1``, the delivery id the provider keeps across retries, and the ids it could read
cheaply once the signature was good. Whole-delivery failures are raised as
:class:`paystream.errors.SignatureError` / :class:`paystream.errors.MalformedDelivery`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import SecretStr

from paystream.config import AccountConfig

# event: a thick, self-contained provider event (Stripe, Adyen, Standard Webhooks).
# thin: verified, but only ids: the processors turn it into a fetch (Amazon Pay IPN, Stripe v2 thin events).
# hint: unsigned and untrusted (Mollie): may only trigger a rate-limited fetch, never set a status.
# sync: a checkout service's synchronous API result or a poll registration (POST /v1/observations).
# control: a transport message that is handled, not published (SNS SubscriptionConfirmation/Unsubscribe).
DeliveryKind = Literal["event", "thin", "hint", "sync", "control"]


@dataclass(frozen=True, slots=True)
class IncomingDelivery:
    provider: str
    account: str
    body: bytes
    # Header names are lower-cased by the HTTP layer.
    headers: Mapping[str, str]
    received_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class ResolvedAccount:
    """An account with its secret references resolved (SecretStr never renders its value)."""

    provider: str
    name: str
    config: AccountConfig
    secrets: tuple[SecretStr, ...] = ()


@dataclass(frozen=True, slots=True)
class Verification:
    verifier: str  # e.g. "stripe-v1", "sns-sha256", "adyen-hmac", "standard-v1", "unsigned-hint"
    key_id: str | None  # which configured secret (by position) or certificate URL matched; never a secret
    ok: bool = True


@dataclass(frozen=True, slots=True)
class VerifiedDelivery:
    delivery_id: str
    body: bytes  # exactly the bytes to publish (for a batched Adyen item: that item, see adyen.verify)
    verification: Verification
    kind: DeliveryKind
    # Ids readable cheaply after verification, e.g. {"object_type": "charge", "object_id": "S02-…",
    # "event_type": "payment_intent.succeeded"}. Optional: the processors parse the body anyway.
    object_ids: Mapping[str, str] = field(default_factory=dict)
    # For control messages: what the HTTP layer must do (e.g. {"subscribe_url": "https://sns…"}).
    control: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """One item of a batch that failed verification while others passed (Adyen)."""

    reason: str  # a short metric label value, e.g. "bad_signature"
    detail: str


@dataclass(frozen=True, slots=True)
class VerificationResult:
    accepted: list[VerifiedDelivery]
    rejected: list[RejectedItem] = field(default_factory=list)
