"""The Amazon Pay API v2 part of the provider double: Get Charge, Refund, Dispute and Charge Permission.

Every request under ``/amazon_pay`` must carry a valid ``AMZN-PAY-RSASSA-PSS-V2`` signature, checked with the
account's *public* key by code written independently of ``ingest/providers/amazon_pay/signing.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

AUTH = re.compile(
    r"AMZN-PAY-RSASSA-PSS-V2 PublicKeyId=(?P<key_id>[^,\s]+), SignedHeaders=(?P<names>[^,\s]+), "
    r"Signature=(?P<signature>\S+)"
)
REQUIRED_SIGNED = {"x-amz-pay-date", "x-amz-pay-host", "x-amz-pay-region"}
PATH = re.compile(
    r"^/amazon_pay(?:/(?P<mode>sandbox|live))?/v2/(?P<kind>charges|refunds|disputes|chargePermissions)/(?P<id>[^/]+)$"
)
# API collection -> the object type objects are stored under (ProviderDouble.set_object)
KINDS = {"charges": "charge", "refunds": "refund", "disputes": "dispute", "chargePermissions": "charge_permission"}
MAX_SKEW_S = 15 * 60
NOT_FOUND = {"reasonCode": "ResourceNotFound"}


def mode_of(path: str) -> str | None:
    """``sandbox`` / ``live`` from the path prefix (None: no prefix, or not an API path)."""
    match = PATH.match(path)
    return match.group("mode") if match else None


async def verify(keys: dict[str, rsa.RSAPublicKey], request: web.Request) -> str:
    """``ok``, or why the request's signature is refused."""
    match = AUTH.fullmatch(request.headers.get("authorization", ""))
    if match is None:
        return "malformed_authorization"
    key = keys.get(match.group("key_id"))
    if key is None:
        return "unknown_public_key_id"
    names = match.group("names").split(";")
    if not set(names) >= REQUIRED_SIGNED:
        return "required_header_not_signed"
    values = {}
    for name in names:
        if name not in request.headers:
            return f"signed_header_missing:{name}"
        values[name] = request.headers[name].strip()
    if values["x-amz-pay-host"] != request.url.host:
        return "host_mismatch"
    try:
        signed_at = datetime.strptime(values["x-amz-pay-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "bad_date"
    if abs((datetime.now(UTC) - signed_at).total_seconds()) > MAX_SKEW_S:
        return "stale_date"
    body = await request.read()
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(request.query.items()))
    canonical = "\n".join(
        [
            request.method,
            request.rel_url.raw_path,
            query,
            "".join(f"{name}:{values[name]}\n" for name in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = "AMZN-PAY-RSASSA-PSS-V2\n" + hashlib.sha256(canonical.encode()).hexdigest()
    try:
        key.verify(
            base64.b64decode(match.group("signature"), validate=True),
            to_sign.encode(),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError):
        return "bad_signature"
    return "ok"


def routes(objects: dict[tuple[str, str, str], dict[str, Any]]) -> list[web.RouteDef]:
    """The signed GETs (the signature is checked by the double's middleware before these run)."""

    async def get(request: web.Request) -> web.Response:
        match = PATH.match(request.path)
        if request.method != "GET" or match is None:
            return web.json_response(NOT_FOUND, status=404)
        body = objects.get(("amazon_pay", KINDS[match.group("kind")], match.group("id")))
        return web.json_response(NOT_FOUND, status=404) if body is None else web.json_response(body)

    return [web.route("*", "/amazon_pay/{tail:.*}", get)]
