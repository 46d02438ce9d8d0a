"""Adyen webhook signatures: HMAC per NotificationRequestItem (standard), or over the body in a header, DESIGN §6.

Adyen batches items: ``{"live": "false", "notificationItems": [{"NotificationRequestItem": {…}}, …]}``
and signs each item separately, over eight of its fields joined by ``:`` — pspReference,
originalReference, merchantAccountCode, merchantReference, amount.value, amount.currency, eventCode,
success — a missing field counting as the empty string and nothing escaped (a ``:`` inside a merchant
reference is signed as is). The key is the hex-decoded HMAC key from the Customer Area; the base64
signature travels inside the item, in ``additionalData.hmacSignature``.

Because the signed fields live inside the JSON, the body must be parsed before anything is verified:
it is parsed only into the batch structure, and nothing in it is trusted until its own item verified.

**Each verified item becomes its own delivery**, whose body is ``orjson.dumps`` of that single
``NotificationRequestItem`` object — not the received bytes — for two reasons: nothing unverified may
reach ``payments.inbox.v1``, and the batch as received also holds the items that failed. The item
keeps its ``hmacSignature``, so a published item can be verified again on replay. Its delivery id is
``{pspReference}:{eventCode}:{success}``, the identity Adyen keeps when it resends.

**Webhooks signed in the header.** Adyen's other webhooks are one ``{"type": ..., "data": {...}}`` event per
request, and where they are HMAC-signed the signature is the base64 HMAC-SHA256 of the raw body, with the same
hex-decoded key, in an ``HmacSignature`` header (Adyen's "Verify HMAC signatures" page,
https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures; its Python
library's ``util.is_valid_hmac_payload``, whose published vector our tests use). The Tokenization webhooks
(``recurring.token.*``, :mod:`ingest.providers.adyen.tokens`) are such events, but their OpenAPI
(``Adyen/adyen-openapi`` ``json/TokenizationNotification-v1.json``) documents only basic authentication. We
require the header anyway: basic auth proves nothing about the bytes, and Adyen's own Magento plugin
(``Model/Webhook/TokenWebhookAcceptor.php``) checks this header on token webhooks. So the merchant
generates an HMAC key for the token webhook in the Customer Area and lists it among the account's secrets
(every secret is tried, so the standard webhook's key and this one can share an account).

Such a body is checked on its raw bytes before anything in it is read, published as received (kind
``event``), and needs its ``HmacSignature`` header kept for a replay's re-verification. Its delivery id is
``{type}:{eventId}:{storedPaymentMethodId}``; a signed event lacking either id (a type Adyen added, another
family sent to this endpoint) is still published, with ``{type}:sha256:{digest of the body}``, so that the
processor sends it to the DLQ with an alert naming the type instead of Adyen retrying it for days.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
from pydantic import SecretStr

from ingest.delivery import (
    IncomingDelivery,
    RejectedItem,
    ResolvedAccount,
    Verification,
    VerificationResult,
    VerifiedDelivery,
)
from ingest.providers._signing import find_matching_secret, hmac_sha256, key_id, require_header, require_secrets
from ingest.providers.adyen.tokens import OBJECT_TYPE as TOKEN_OBJECT_TYPE
from ingest.providers.adyen.tokens import TYPES as TOKEN_TYPES
from ingest.providers.adyen.tokens import is_type_webhook
from paystream.errors import ConfigurationError, MalformedDelivery, SignatureError

VERIFIER = "adyen-hmac"
HEADER_VERIFIER = "adyen-hmac-header"
ITEM_KEY = "NotificationRequestItem"
SIGNATURE_HEADER = "hmacsignature"  # HmacSignature, lower-cased by the HTTP layer


def decode_key(secret: str) -> bytes:
    """The HMAC key from its hex form; an undecodable key is our configuration error (5xx, Adyen retries)."""
    try:
        key = bytes.fromhex(secret.strip())
    except ValueError as exc:
        raise ConfigurationError("an Adyen HMAC key is not hexadecimal") from exc
    if not key:
        raise ConfigurationError("an Adyen HMAC key is empty")
    return key


def signing_string(item: Mapping[str, object]) -> str:
    """The eight fields joined by ``:``; raises ``ValueError`` for a field that is not a JSON scalar."""
    amount = item.get("amount")
    amount_fields = amount if isinstance(amount, Mapping) else {}
    values = (
        item.get("pspReference"),
        item.get("originalReference"),
        item.get("merchantAccountCode"),
        item.get("merchantReference"),
        amount_fields.get("value"),
        amount_fields.get("currency"),
        item.get("eventCode"),
        item.get("success"),
    )
    return ":".join(_field_text(value) for value in values)


def sign_item(item: Mapping[str, object], key: bytes) -> str:
    """The base64 ``hmacSignature`` of one NotificationRequestItem."""
    return base64.b64encode(hmac_sha256(key, signing_string(item).encode("utf-8"))).decode("ascii")


def sign_body(body: bytes, key: bytes) -> str:
    """The base64 ``HmacSignature`` header value of a webhook signed over its raw body."""
    return base64.b64encode(hmac_sha256(key, body)).decode("ascii")


def _field_text(value: object) -> str:
    # Missing and null are the empty string. Adyen sends amount.value as a JSON number; its decimal
    # text is what was signed. JSON true/false (never seen from Adyen, which sends "true") as JSON text.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    raise ValueError(f"signed field holds a {type(value).__name__}, not a scalar")


async def verify(delivery: IncomingDelivery, account: ResolvedAccount) -> VerificationResult:
    secrets = require_secrets(account)
    document = _load_json(delivery.body)
    if is_type_webhook(document):
        return VerificationResult(accepted=[_verify_header_signed(delivery, document, secrets)])
    live, items = _parse_batch(document)
    accepted: list[VerifiedDelivery] = []
    rejected: list[RejectedItem] = []
    for index, item in enumerate(items):
        outcome = _verify_item(item, secrets, live)
        if isinstance(outcome, RejectedItem):
            rejected.append(RejectedItem(reason=outcome.reason, detail=f"item {index}: {outcome.detail}"))
        else:
            accepted.append(outcome)
    if not accepted:
        reasons = {item.reason for item in rejected}
        code = reasons.pop() if len(reasons) == 1 else "bad_signature"
        raise SignatureError(f"no item of the batch verified ({len(rejected)} items)", code=code)
    return VerificationResult(accepted=accepted, rejected=rejected)


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDelivery(f"body is not JSON: {exc}", code="malformed_json") from exc


def _parse_batch(batch: Any) -> tuple[str | None, list[Mapping[str, object]]]:
    wrappers = batch.get("notificationItems") if isinstance(batch, dict) else None
    if not isinstance(wrappers, list) or not wrappers:
        raise MalformedDelivery("body has no notificationItems list", code="malformed_batch")
    items: list[Mapping[str, object]] = []
    for wrapper in wrappers:
        item = wrapper.get(ITEM_KEY) if isinstance(wrapper, dict) else None
        if not isinstance(item, dict):
            raise MalformedDelivery(f"a notificationItems entry has no {ITEM_KEY} object", code="malformed_batch")
        items.append(item)
    live = batch.get("live")
    return (live if isinstance(live, str) else None), items


def _verify_item(
    item: Mapping[str, object], secrets: Sequence[SecretStr], live: str | None
) -> VerifiedDelivery | RejectedItem:
    additional = item.get("additionalData")
    presented = additional.get("hmacSignature") if isinstance(additional, Mapping) else None
    if not isinstance(presented, str) or not presented:
        return RejectedItem(reason="missing_signature", detail="no additionalData.hmacSignature")
    try:
        message = signing_string(item).encode("utf-8")
    except ValueError as exc:
        return RejectedItem(reason="malformed_item", detail=str(exc))

    def expected() -> Iterator[bytes]:
        for secret in secrets:
            yield base64.b64encode(hmac_sha256(decode_key(secret.get_secret_value()), message))

    position = find_matching_secret(expected(), [presented.encode("utf-8")])
    if position is None:
        return RejectedItem(reason="bad_signature", detail="hmacSignature does not match any configured key")

    # Trusted from here on.
    psp_reference, event_code = item.get("pspReference"), item.get("eventCode")
    if not isinstance(psp_reference, str) or not psp_reference or not isinstance(event_code, str):
        return RejectedItem(reason="malformed_item", detail="signed item lacks pspReference or eventCode")
    success = _field_text(item.get("success"))
    return VerifiedDelivery(
        delivery_id=f"{psp_reference}:{event_code}:{success}",
        body=orjson.dumps(item),
        verification=Verification(verifier=VERIFIER, key_id=key_id(position)),
        kind="event",
        object_ids=_item_ids(item, psp_reference, event_code, live),
    )


def _item_ids(item: Mapping[str, object], psp_reference: str, event_code: str, live: str | None) -> dict[str, str]:
    # A modification (CAPTURE, REFUND, …) has its own pspReference; the payment is its originalReference.
    original = item.get("originalReference")
    ids = {
        "event_type": event_code,
        "object_type": "payment",
        "object_id": original if isinstance(original, str) and original else psp_reference,
        "psp_reference": psp_reference,
    }
    if isinstance(original, str) and original:
        ids["original_reference"] = original
    merchant_reference = item.get("merchantReference")
    if isinstance(merchant_reference, str) and merchant_reference:
        ids["merchant_reference"] = merchant_reference
    if live is not None:
        ids["live"] = live
    return ids


def _verify_header_signed(
    delivery: IncomingDelivery, document: Mapping[str, object], secrets: Sequence[SecretStr]
) -> VerifiedDelivery:
    presented = require_header(delivery, SIGNATURE_HEADER).encode("utf-8")

    def expected() -> Iterator[bytes]:
        for secret in secrets:
            yield sign_body(delivery.body, decode_key(secret.get_secret_value())).encode("ascii")

    position = find_matching_secret(expected(), [presented])
    if position is None:
        raise SignatureError("HmacSignature does not match any configured key", code="bad_signature")

    # Trusted from here on.
    kind, data, event_id = document.get("type"), document.get("data"), document.get("eventId")
    if not isinstance(kind, str) or not kind or not isinstance(data, dict) or not isinstance(event_id, str | None):
        raise MalformedDelivery("signed webhook lacks a type, a data object or a text eventId",
                                code="malformed_event")
    token = data.get("storedPaymentMethodId")
    token = token if isinstance(token, str) and token else None
    ids = {"event_type": kind}
    if event_id and token:
        delivery_id = f"{kind}:{event_id}:{token}"
    else:
        delivery_id = f"{kind}:sha256:{hashlib.sha256(delivery.body).hexdigest()}"
    if event_id:
        ids["event_id"] = event_id
    if token and kind in TOKEN_TYPES:
        ids.update(object_type=TOKEN_OBJECT_TYPE, object_id=token)
    environment = document.get("environment")
    if isinstance(environment, str):
        ids["environment"] = environment
    return VerifiedDelivery(
        delivery_id=delivery_id,
        body=delivery.body,
        verification=Verification(verifier=HEADER_VERIFIER, key_id=key_id(position)),
        kind="event",
        object_ids=ids,
    )
