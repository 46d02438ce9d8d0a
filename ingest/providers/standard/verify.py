"""Standard Webhooks signatures (https://www.standardwebhooks.com/, used by Svix-based senders), DESIGN §6.

Headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``; the signature header holds
space-separated ``v1,<base64>`` entries (several during a rotation; other versions such as ``v1a`` are
ignored). The content signed is ``{id}.{timestamp}.{raw body}`` with HMAC-SHA256 keyed by the
base64-decoded part of the ``whsec_…`` secret. The ``webhook-id`` stays the same across retries, so it is
the delivery id.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import orjson

from ingest.delivery import (
    IncomingDelivery,
    ResolvedAccount,
    Verification,
    VerificationResult,
    VerifiedDelivery,
)
from ingest.providers._signing import (
    check_freshness,
    find_matching_secret,
    hmac_sha256,
    key_id,
    parse_unix_timestamp,
    require_header,
    require_secrets,
)
from paystream.errors import ConfigurationError, MalformedDelivery, SignatureError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
VERSION = "v1"
VERIFIER = "standard-v1"
# The id becomes part of the Kafka key: keep it short and printable.
_MAX_ID_LENGTH = 256


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; the prefix and the base64 padding are optional.

    An undecodable secret is our configuration error, not the sender's: it raises
    :class:`ConfigurationError` (the HTTP layer answers 5xx and the sender retries once it is fixed).
    """
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII input
        raise ConfigurationError("a Standard Webhooks secret is not valid base64 (after 'whsec_')") from exc
    if not key:
        raise ConfigurationError("a Standard Webhooks secret is empty")
    return key


def signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """One ``v1,<base64>`` entry."""
    return VERSION + "," + base64.b64encode(hmac_sha256(key, signed_content(msg_id, timestamp, body))).decode()


def v1_entries(header: str) -> list[str]:
    """The base64 part of every ``v1,<base64>`` entry; entries of other versions are skipped."""
    entries: list[str] = []
    for entry in header.split():
        version, sep, encoded = entry.partition(",")
        if sep and version == VERSION:
            entries.append(encoded)
    return entries


def _decoded(entries: list[str]) -> list[bytes]:
    found: list[bytes] = []
    for encoded in entries:
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except ValueError:  # binascii.Error, or non-ASCII input
            continue  # cannot match; another entry still may
    return found


async def verify(delivery: IncomingDelivery, account: ResolvedAccount) -> VerificationResult:
    secrets = require_secrets(account)
    msg_id = require_header(delivery, ID_HEADER)
    raw_timestamp = require_header(delivery, TIMESTAMP_HEADER)
    signature_header = require_header(delivery, SIGNATURE_HEADER)
    if len(msg_id) > _MAX_ID_LENGTH or not msg_id.isascii() or not msg_id.isprintable():
        raise SignatureError("webhook-id is not a short printable ASCII id", code="malformed_header")
    timestamp = parse_unix_timestamp(raw_timestamp, TIMESTAMP_HEADER)
    entries = v1_entries(signature_header)
    if not entries:
        raise SignatureError("webhook-signature carries no v1 entry", code="malformed_header")
    presented = _decoded(entries)

    content = signed_content(msg_id, raw_timestamp, delivery.body)

    def expected() -> Iterator[bytes]:
        for secret in secrets:
            yield hmac_sha256(decode_secret(secret.get_secret_value()), content)

    position = find_matching_secret(expected(), presented)
    if position is None:
        raise SignatureError("no v1 signature matches any configured secret", code="bad_signature")
    check_freshness(timestamp, delivery.received_at, account.config.tolerance_s)

    return VerificationResult(
        accepted=[
            VerifiedDelivery(
                delivery_id=msg_id,
                body=delivery.body,
                verification=Verification(verifier=VERIFIER, key_id=key_id(position)),
                kind="event",
                object_ids=_event_ids(delivery.body),
            )
        ]
    )


def _event_ids(body: bytes) -> dict[str, str]:
    """The ``type`` of the (now trusted) payload, by convention ``{"type": …, "timestamp": …, "data": …}``."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDelivery(f"signed body is not JSON: {exc}", code="malformed_json") from exc
    if isinstance(payload, dict) and isinstance(payload.get("type"), str):
        return {"event_type": payload["type"]}
    return {}
