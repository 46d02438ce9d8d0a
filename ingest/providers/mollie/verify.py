"""Mollie's classic webhook: an unsigned hint, DESIGN §4.1 and §6.

Mollie posts ``id=tr_xxx`` (``application/x-www-form-urlencoded``) and signs nothing, so anyone can
send one. The delivery is therefore only a **hint**: it is validated strictly and published with
``kind="hint"``; the processors may use it to fetch the object from Mollie's API (with our API key), and
never to set a status. ``Verification.ok`` is ``True`` here in the sense *well-formed*, not *authentic*
— the verifier name ``unsigned-hint`` says so wherever it is recorded.

Because hints cost us an API call each, :class:`HintLimiter` caps them per account (a token bucket); the
HTTP layer asks it before publishing and answers 429 when it says no.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ingest.delivery import (
    IncomingDelivery,
    ResolvedAccount,
    Verification,
    VerificationResult,
    VerifiedDelivery,
)
from paystream.errors import MalformedDelivery

VERIFIER = "unsigned-hint"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# Mollie ids are short (``tr_`` + ~10 characters); anything far longer is not one.
_MAX_BODY_BYTES = 128
_ID_PATTERN = re.compile(r"(tr|ord|re|chb|sub|mdt)_[A-Za-z0-9]{1,64}")
_OBJECT_TYPES = {
    "tr": "payment",
    "ord": "order",
    "re": "refund",
    "chb": "chargeback",
    "sub": "subscription",
    "mdt": "mandate",
}


def parse_hint(body: bytes, content_type: str | None) -> str:
    """The one resource id of a hint body, or :class:`MalformedDelivery` (code ``malformed_hint``)."""
    if content_type is not None and content_type.split(";")[0].strip().lower() != FORM_CONTENT_TYPE:
        raise MalformedDelivery(f"hint must be {FORM_CONTENT_TYPE}", code="malformed_hint")
    if len(body) > _MAX_BODY_BYTES or not body.isascii():
        raise MalformedDelivery("hint body is not a short ASCII form", code="malformed_hint")
    try:
        fields = parse_qsl(body.decode("ascii"), strict_parsing=True, max_num_fields=2)
    except ValueError as exc:
        raise MalformedDelivery(f"hint body is not a form: {exc}", code="malformed_hint") from exc
    if len(fields) != 1 or fields[0][0] != "id":
        raise MalformedDelivery("hint body must be exactly one 'id' field", code="malformed_hint")
    resource_id = fields[0][1]
    if _ID_PATTERN.fullmatch(resource_id) is None:
        raise MalformedDelivery("hint id is not a Mollie resource id", code="malformed_hint")
    return resource_id


async def verify(delivery: IncomingDelivery, account: ResolvedAccount) -> VerificationResult:
    resource_id = parse_hint(delivery.body, delivery.headers.get("content-type"))
    prefix = resource_id.partition("_")[0]
    return VerificationResult(
        accepted=[
            VerifiedDelivery(
                # Repeated hints for one object within a second collapse into one inbox key.
                delivery_id=f"hint:{resource_id}:{int(delivery.received_at)}",
                body=delivery.body,
                verification=Verification(verifier=VERIFIER, key_id=None, ok=True),
                kind="hint",
                object_ids={"object_type": _OBJECT_TYPES[prefix], "object_id": resource_id},
            )
        ]
    )


@dataclass(frozen=True, slots=True)
class HintAdmission:
    """The limiter's answer: when ``allowed`` is false, answer 429 with ``Retry-After: retry_after_s``."""

    allowed: bool
    retry_after_s: float = 0.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float


class HintLimiter:
    """A token bucket per (provider, account): ``hint_rate_per_s`` refill, ``hint_burst`` capacity.

    Rate and burst are read from the account on every call, so a reloaded configuration applies at
    once. One instance per process; it is not shared across replicas (each replica admits up to the
    rate, which is fine for a cap whose purpose is to bound our fetches, not to be exact).
    ``clock`` is injectable for tests and must be monotonic.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def admit(self, account: ResolvedAccount) -> HintAdmission:
        rate = account.config.hint_rate_per_s
        burst = float(account.config.hint_burst)
        now = self._clock()
        bucket = self._buckets.setdefault((account.provider, account.name), _Bucket(burst, now))
        elapsed = max(0.0, now - bucket.updated_at)
        bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
        bucket.updated_at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return HintAdmission(allowed=True)
        return HintAdmission(allowed=False, retry_after_s=(1.0 - bucket.tokens) / rate)
