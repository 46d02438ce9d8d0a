"""Our own signers for every push format we verify: demo traffic (``paystream run``) and tests use them.

They share the canonical-string code of the verifiers on purpose (one definition of each format); the
tests check them against the providers' official SDKs in both directions, so a shared mistake shows.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ingest.providers.adyen.verify import ITEM_KEY, decode_key, sign_item
from ingest.providers.amazon_pay.sns import HASHES, string_to_sign
from ingest.providers.standard.verify import decode_secret
from ingest.providers.standard.verify import sign as standard_entry
from ingest.providers.stripe.verify import expected_signature


def sign_stripe(body: bytes, secrets: str | Iterable[str], timestamp: int) -> str:
    """A ``Stripe-Signature`` header value; several secrets give several ``v1`` (as during a rotation)."""
    all_secrets = [secrets] if isinstance(secrets, str) else list(secrets)
    entries = [f"v1={expected_signature(secret, timestamp, body)}" for secret in all_secrets]
    return ",".join([f"t={timestamp}", *entries])


def sign_standard(body: bytes, secrets: str | Iterable[str], msg_id: str, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers (lower-case names, as the HTTP layer passes them on)."""
    all_secrets = [secrets] if isinstance(secrets, str) else list(secrets)
    signatures = [standard_entry(decode_secret(secret), msg_id, str(timestamp), body) for secret in all_secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def sign_adyen_item(item: Mapping[str, object], hex_key: str) -> dict[str, object]:
    """A copy of a NotificationRequestItem with ``additionalData.hmacSignature`` set."""
    signed = copy.deepcopy(dict(item))
    existing = signed.get("additionalData")
    additional = dict(existing) if isinstance(existing, Mapping) else {}
    additional["hmacSignature"] = sign_item(signed, decode_key(hex_key))
    signed["additionalData"] = additional
    return signed


def adyen_batch(items: Iterable[Mapping[str, object]], *, live: bool = False) -> bytes:
    """The body Adyen posts: already-signed items wrapped in ``notificationItems``."""
    wrapped = [{ITEM_KEY: item} for item in items]
    return orjson.dumps({"live": "true" if live else "false", "notificationItems": wrapped})


def sign_sns(message: Mapping[str, object], private_key: rsa.RSAPrivateKey) -> dict[str, object]:
    """A copy of an SNS message with ``Signature`` set, per its ``SignatureVersion`` ("1" or "2")."""
    version = str(message["SignatureVersion"])
    signature = private_key.sign(string_to_sign(message), padding.PKCS1v15(), HASHES[version]())
    return {**message, "Signature": base64.b64encode(signature).decode("ascii")}


def mollie_hint(resource_id: str) -> bytes:
    """The form body of Mollie's classic webhook (it signs nothing)."""
    return urlencode({"id": resource_id}).encode("ascii")
