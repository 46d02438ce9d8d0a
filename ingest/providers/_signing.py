"""What the HMAC verifiers (Stripe, Standard Webhooks, Adyen) share.

Every failure here is raised as :class:`paystream.errors.SignatureError` with a short, stable code: the
code is a metric label value and goes into the JSON error body, so the set of codes stays small.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from pydantic import SecretStr

from ingest.delivery import IncomingDelivery, ResolvedAccount
from paystream.errors import SignatureError

# A unix timestamp in seconds has 10 digits until the year 2286; anything much longer is not one, and
# refusing it early keeps int() away from attacker-sized numbers.
_MAX_TIMESTAMP_DIGITS = 12


def require_secrets(account: ResolvedAccount) -> tuple[SecretStr, ...]:
    """The account's active secrets (several during a rotation), or a refusal if none is configured."""
    if not account.secrets:
        raise SignatureError(
            f"no signing secret configured for {account.provider}/{account.name}",
            code="no_secret_configured",
        )
    return account.secrets


def require_header(delivery: IncomingDelivery, name: str) -> str:
    """The value of header ``name`` (lower-case); an empty value counts as missing."""
    value = delivery.headers.get(name, "").strip()
    if not value:
        raise SignatureError(f"missing {name} header", code="missing_header")
    return value


def parse_unix_timestamp(raw: str, header: str) -> int:
    """A signed timestamp: plain decimal digits only (no sign, no fraction, no whitespace inside)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError(f"{header}: timestamp is not a unix time in seconds", code="malformed_header")
    return int(raw)


def check_freshness(timestamp: int, now: float, tolerance_s: int) -> None:
    """Refuse a signed timestamp further than ``tolerance_s`` from ``now``, in either direction.

    Called only *after* the signature matched, so "stale_timestamp" always means "authentic but old"
    (a replay, or a clock problem worth an alert) and never counts forged traffic. A tolerance of 0
    disables the check, as in Stripe's own SDK (useful only for re-verifying archived deliveries).
    """
    if tolerance_s <= 0:
        return
    if now - timestamp > tolerance_s:
        raise SignatureError(
            f"signed timestamp is {int(now - timestamp)} s old (tolerance {tolerance_s} s)",
            code="stale_timestamp",
        )
    if timestamp - now > tolerance_s:
        raise SignatureError(
            f"signed timestamp is {int(timestamp - now)} s in the future (tolerance {tolerance_s} s)",
            code="future_timestamp",
        )


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def find_matching_secret(expected_per_secret: Iterable[bytes], presented: Sequence[bytes]) -> int | None:
    """Position of the first secret whose expected signature equals any presented one.

    ``expected_per_secret`` may be lazy, so a delivery signed with the first secret costs one HMAC.
    Every comparison is constant-time (:func:`hmac.compare_digest`).
    """
    for position, expected in enumerate(expected_per_secret):
        for candidate in presented:
            if hmac.compare_digest(expected, candidate):
                return position
    return None


def key_id(position: int) -> str:
    """How a matching secret is named in ``Verification.key_id``: its position, never its value."""
    return f"secret[{position}]"
