"""Stripe webhook signatures (``Stripe-Signature: t=…,v1=…``), DESIGN §6.

The signature is hex(HMAC-SHA256(secret, f"{t}.{raw body}")) where the key is the utf-8 bytes of the
whole secret *including* its ``whsec_`` prefix (Stripe does not base64-decode it, unlike Standard
Webhooks). During a secret rotation Stripe sends one ``v1`` per active secret, and an account here may
list several secrets too: any pair matching is enough. ``v0`` (test-mode legacy) and unknown schemes are
ignored, never accepted.

The body is parsed only after the signature matched, and only to read the event id (Stripe keeps it
across retries, so it is the delivery id) and a few cheap ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import orjson

from ingest.delivery import (
    DeliveryKind,
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
from paystream.errors import MalformedDelivery, SignatureError

HEADER = "stripe-signature"
SCHEME = "v1"
VERIFIER = "stripe-v1"
# Stripe's v2 "thin" event notifications carry only the related object's id: the processors fetch it.
THIN_EVENT_OBJECT = "v2.core.event"


def signed_payload(timestamp: int, body: bytes) -> bytes:
    """The exact bytes Stripe signs: ``{t}.{raw body}``."""
    return str(timestamp).encode("ascii") + b"." + body


def expected_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256, as it appears after ``v1=``."""
    return hmac_sha256(secret.encode("utf-8"), signed_payload(timestamp, body)).hex()


def parse_signature_header(value: str) -> tuple[int, list[str]]:
    """``t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`` → (t, the v1 signatures). Exactly one ``t`` is required."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in value.split(","):
        name, sep, content = item.strip().partition("=")
        if not sep:
            continue  # a stray fragment; Stripe's own parser ignores it as well
        if name == "t":
            timestamps.append(content)
        elif name == SCHEME:
            signatures.append(content)
    if len(timestamps) != 1:
        raise SignatureError("Stripe-Signature needs exactly one t=", code="malformed_header")
    if not signatures:
        raise SignatureError("Stripe-Signature carries no v1 signature", code="malformed_header")
    return parse_unix_timestamp(timestamps[0], "Stripe-Signature"), signatures


async def verify(delivery: IncomingDelivery, account: ResolvedAccount) -> VerificationResult:
    secrets = require_secrets(account)
    timestamp, signatures = parse_signature_header(require_header(delivery, HEADER))
    presented = [signature.encode("utf-8") for signature in signatures]

    def expected() -> Iterator[bytes]:
        for secret in secrets:
            yield expected_signature(secret.get_secret_value(), timestamp, delivery.body).encode("ascii")

    position = find_matching_secret(expected(), presented)
    if position is None:
        raise SignatureError("no v1 signature matches any configured secret", code="bad_signature")
    check_freshness(timestamp, delivery.received_at, account.config.tolerance_s)

    event = _parse_event(delivery.body)  # trusted from here on
    kind, object_ids = _describe(event)
    return VerificationResult(
        accepted=[
            VerifiedDelivery(
                delivery_id=str(event["id"]),
                body=delivery.body,
                verification=Verification(verifier=VERIFIER, key_id=key_id(position)),
                kind=kind,
                object_ids=object_ids,
            )
        ]
    )


def _parse_event(body: bytes) -> dict[str, object]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDelivery(f"signed body is not JSON: {exc}", code="malformed_json") from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        raise MalformedDelivery("signed body is not a Stripe event with an id", code="malformed_event")
    return event


def _describe(event: Mapping[str, object]) -> tuple[DeliveryKind, dict[str, str]]:
    ids: dict[str, str] = {}
    if isinstance(event.get("type"), str):
        ids["event_type"] = str(event["type"])
    if event.get("object") == THIN_EVENT_OBJECT:
        # {"related_object": {"id": "mtr_…", "type": "billing.meter", "url": "/v1/…"}}; may be absent.
        _copy_ids(event.get("related_object"), ids, id_key="id", type_key="type")
        return "thin", ids
    data = event.get("data")
    if isinstance(data, dict):
        _copy_ids(data.get("object"), ids, id_key="id", type_key="object")
    return "event", ids


def _copy_ids(source: object, ids: dict[str, str], *, id_key: str, type_key: str) -> None:
    if not isinstance(source, dict):
        return
    if isinstance(source.get(id_key), str):
        ids["object_id"] = source[id_key]
    if isinstance(source.get(type_key), str):
        ids["object_type"] = source[type_key]
