"""Amazon Pay IPNs delivered by Amazon SNS: message signature, topic allow-list, control messages.

SNS posts a JSON document (``Content-Type: text/plain``, JSON regardless) whose signature covers a
canonical string built from some of its own fields, so the body is parsed first — only into a flat
mapping of strings — and nothing in it is trusted before the RSA signature verified:

* ``SignatureVersion`` "1" is SHA1withRSA, "2" SHA256withRSA (both PKCS#1 v1.5);
* the canonical string is ``Key\\nValue\\n`` for each key of the message type, in order;
* the certificate comes from ``SigningCertURL``, validated before any fetch (see :mod:`.certs`);
* ``TopicArn`` must be on the account's allow-list (checked before the certificate is even looked up,
  so foreign topics cannot make us fetch anything; an empty list refuses everything).

**Certificate validity is checked at the message's ``Timestamp``, not at the current time.** SNS signs
at publish time with the certificate current then; a message verified against the certificate's
validity window at that instant stays authentic later (retries, replays of archived deliveries, the
published AWS test vectors whose certificate expired in 2022). Freshness of deliveries is not what
this check is for: SNS retries keep their ``MessageId``, which is the delivery id and dedupes them.

Amazon Pay's IPN is thin: the ``Message`` is a JSON string with ids only (``ObjectType``, ``ObjectId``,
``ChargePermissionId``, ``NotificationId``…); the processors fetch the object.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ingest.delivery import (
    DeliveryKind,
    IncomingDelivery,
    ResolvedAccount,
    Verification,
    VerificationResult,
    VerifiedDelivery,
)
from ingest.providers.amazon_pay.certs import CertificateStore, validate_sns_url
from paystream.errors import InfrastructureError, MalformedDelivery, SignatureError

NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_KEYS = {
    "Notification": NOTIFICATION_KEYS,
    "SubscriptionConfirmation": CONFIRMATION_KEYS,
    "UnsubscribeConfirmation": CONFIRMATION_KEYS,
}
OPTIONAL_KEYS = frozenset({"Subject"})
HASHES: dict[str, type[hashes.SHA1] | type[hashes.SHA256]] = {"1": hashes.SHA1, "2": hashes.SHA256}
VERIFIERS = {"1": "sns-sha1", "2": "sns-sha256"}
# Inner Amazon Pay message field → object_ids key.
_AMAZON_PAY_IDS = {
    "ObjectId": "object_id",
    "ChargePermissionId": "charge_permission_id",
    "NotificationId": "notification_id",
    "NotificationType": "notification_type",
}

_default_store: CertificateStore | None = None


def install_certificate_store(store: CertificateStore) -> None:
    """Set the store :func:`verify` uses when none is passed (the HTTP layer does this at start-up)."""
    global _default_store
    _default_store = store


def string_to_sign(message: Mapping[str, object]) -> bytes:
    """The canonical string of an SNS message, per its ``Type``."""
    keys = SIGNED_KEYS.get(str(message.get("Type")))
    if keys is None:
        raise MalformedDelivery("unsupported SNS message Type", code="malformed_sns")
    lines: list[str] = []
    for key in keys:
        value = message.get(key)
        if value is None and key in OPTIONAL_KEYS:
            continue
        if not isinstance(value, str):
            raise MalformedDelivery(f"SNS message field {key} is missing or not a string", code="malformed_sns")
        lines.append(f"{key}\n{value}\n")
    return "".join(lines).encode("utf-8")


async def verify(
    delivery: IncomingDelivery, account: ResolvedAccount, *, store: CertificateStore | None = None
) -> VerificationResult:
    message = _parse_envelope(delivery.body)
    canonical = string_to_sign(message)  # also checks Type and the presence of every signed field
    topic_arn = str(message["TopicArn"])
    if topic_arn not in account.config.allowed_topic_arns:
        raise SignatureError(f"topic {topic_arn[:200]!r} is not allowed here", code="topic_not_allowed")
    version = message.get("SignatureVersion")
    if not isinstance(version, str) or version not in HASHES:
        raise SignatureError("unsupported SNS SignatureVersion", code="unsupported_signature_version")
    cert_url = message.get("SigningCertURL")
    if not isinstance(cert_url, str):
        raise SignatureError("SNS message has no SigningCertURL", code="untrusted_cert_url")
    validate_sns_url(cert_url, code="untrusted_cert_url", require_pem=True)
    signature = _decode_signature(message.get("Signature"))
    signed_at = _parse_timestamp(str(message["Timestamp"]))

    certificate = await (store or _store()).get(cert_url)
    if not certificate.not_valid_before_utc <= signed_at <= certificate.not_valid_after_utc:
        raise SignatureError("signing certificate was not valid at the message Timestamp", code="cert_not_valid")
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):  # load_certificate refuses these; a seeded one too
        raise SignatureError("signing certificate does not hold an RSA key", code="cert_rejected")
    try:
        public_key.verify(signature, canonical, padding.PKCS1v15(), HASHES[version]())
    except InvalidSignature as exc:
        raise SignatureError("SNS signature does not verify", code="bad_signature") from exc

    # Trusted from here on.
    return VerificationResult(accepted=[_describe(message, delivery.body, VERIFIERS[version], cert_url)])


def _store() -> CertificateStore:
    global _default_store
    if _default_store is None:
        _default_store = CertificateStore()
    return _default_store


def _parse_envelope(body: bytes) -> Mapping[str, object]:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDelivery(f"SNS body is not JSON: {exc}", code="malformed_json") from exc
    if not isinstance(message, dict):
        raise MalformedDelivery("SNS body is not a JSON object", code="malformed_sns")
    return message


def _decode_signature(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise SignatureError("SNS message has no Signature", code="missing_signature")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII input
        raise SignatureError("SNS Signature is not base64", code="bad_signature") from exc


def _parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedDelivery("SNS Timestamp is not ISO 8601", code="malformed_sns") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _describe(message: Mapping[str, object], body: bytes, verifier: str, cert_url: str) -> VerifiedDelivery:
    message_type = str(message["Type"])
    topic_arn = str(message["TopicArn"])
    kind: DeliveryKind = "control"
    control: dict[str, str] = {}
    object_ids = {"topic_arn": topic_arn}
    if message_type == "SubscriptionConfirmation":
        subscribe_url = validate_sns_url(
            str(message["SubscribeURL"]), code="untrusted_subscribe_url", require_pem=False
        )
        control = {"action": "confirm_subscription", "subscribe_url": subscribe_url, "topic_arn": topic_arn}
    elif message_type == "UnsubscribeConfirmation":
        control = {"action": "log_unsubscribe", "topic_arn": topic_arn}
    else:
        kind = "thin"
        object_ids.update(_amazon_pay_ids(str(message["Message"])))
    return VerifiedDelivery(
        delivery_id=str(message["MessageId"]),  # SNS keeps it across retries
        body=body,  # the whole signed envelope: it can be verified again on replay
        verification=Verification(verifier=verifier, key_id=cert_url),
        kind=kind,
        object_ids=object_ids,
        control=control,
    )


def _amazon_pay_ids(inner: str) -> dict[str, str]:
    """Ids of an Amazon Pay v2 IPN message; whatever is there if it is not that shape (still accepted)."""
    try:
        payload = orjson.loads(inner)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(payload, dict):
        return {}
    ids = {key: payload[source] for source, key in _AMAZON_PAY_IDS.items() if isinstance(payload.get(source), str)}
    if isinstance(payload.get("ObjectType"), str):
        ids["object_type"] = payload["ObjectType"].lower()  # CHARGE → charge, CHARGE_PERMISSION → …
    if isinstance(payload.get("MockNotification"), str | bool):
        ids["mock"] = str(payload["MockNotification"]).lower()
    return ids


async def confirm_subscription(url: str, session: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> None:
    """GET the SubscribeURL of a verified SubscriptionConfirmation (checked again: https + SNS host).

    Redirects are not followed. A failure raises :class:`InfrastructureError`: answer 503 and SNS
    resends the confirmation.
    """
    validate_sns_url(url, code="untrusted_subscribe_url", require_pem=False)
    try:
        async with session.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.content.read(64 * 1024)
            if response.status != 200:
                raise InfrastructureError(f"SubscribeURL answered {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InfrastructureError(f"cannot confirm the SNS subscription: {type(exc).__name__}") from exc
