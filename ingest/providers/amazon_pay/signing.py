"""Amazon Pay API v2 request signing (``AMZN-PAY-RSASSA-PSS-V2``).

The scheme, as the official SDKs implement it (amzn/amazon-pay-api-sdk-php ``Client::createSignature``,
amazon-pay-api-sdk-java ``SignatureHelper``):

    canonical request = METHOD \\n canonical URI \\n canonical query \\n
                        ("name:value\\n" for each signed header, names lower-case and sorted) \\n
                        signed header names joined by ";" \\n hex(sha256(payload))
    string to sign    = "AMZN-PAY-RSASSA-PSS-V2" \\n hex(sha256(canonical request))
    signature         = base64(RSASSA-PSS(SHA-256, MGF1-SHA-256, salt length 32)(string to sign))

and the request carries ``x-amz-pay-date`` (``YYYYMMDDTHHMMSSZ``), ``x-amz-pay-host``, ``x-amz-pay-region``
and ``authorization: AMZN-PAY-RSASSA-PSS-V2 PublicKeyId=…, SignedHeaders=…, Signature=…``.
(The older ``AMZN-PAY-RSASSA-PSS`` scheme differs only in its name and a salt length of 20.)
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from paystream.errors import ConfigurationError

ALGORITHM = "AMZN-PAY-RSASSA-PSS-V2"
SALT_LENGTH = 32
# Per-region API hosts; "us"/"de"/"uk" are the SDKs' aliases of the three regions.
REGION_HOSTS = {"eu": "pay-api.amazon.eu", "na": "pay-api.amazon.com", "jp": "pay-api.amazon.jp"}
REGION_ALIASES = {"eu": "eu", "de": "eu", "uk": "eu", "na": "na", "us": "na", "jp": "jp"}


def region_host(region: str) -> str:
    try:
        return REGION_HOSTS[REGION_ALIASES[region.lower()]]
    except KeyError:
        raise ConfigurationError(f"amazon_pay: unknown API region {region!r}") from None


def mode_path_prefix(public_key_id: str, sandbox: bool) -> str:
    """The sandbox/live path rule: keys issued per environment (``LIVE-…`` / ``SANDBOX-…``) already say
    which environment they belong to and use no prefix; older keys need ``/sandbox`` or ``/live``."""
    upper = public_key_id.upper()
    if upper.startswith("LIVE-") or upper.startswith("SANDBOX-"):
        return ""
    return "/sandbox" if sandbox else "/live"


def pay_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _encode(value: str) -> str:
    # RFC 3986 unreserved characters stay as they are (rawurlencode with "~" kept).
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params.items()) if v != "")


def canonical_request(
    method: str, path: str, query: Mapping[str, str], signed_headers: Mapping[str, str], payload: bytes
) -> str:
    headers = {name.lower(): value.strip() for name, value in signed_headers.items()}
    names = sorted(headers)
    header_block = "".join(f"{name}:{headers[name]}\n" for name in names)
    return "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(query),
            header_block,
            ";".join(names),
            hashlib.sha256(payload).hexdigest(),
        ]
    )


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"amazon_pay: private key is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("amazon_pay: private key is not an RSA key")
    return key


@dataclass(frozen=True, slots=True)
class AmazonPaySigner:
    public_key_id: str
    private_key: rsa.RSAPrivateKey
    region: str

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        payload: bytes = b"",
        now: datetime | None = None,
    ) -> dict[str, str]:
        """The headers to send with the request (all signed ones plus ``authorization``)."""
        headers = {
            "accept": "application/json",
            "content-type": "application/json",
            "x-amz-pay-date": pay_date(now or datetime.now(UTC)),
            "x-amz-pay-host": host,
            "x-amz-pay-region": self.region,
        }
        canonical = canonical_request(method, path, query or {}, headers, payload)
        signature = self.private_key.sign(
            string_to_sign(canonical).encode("utf-8"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=SALT_LENGTH),
            hashes.SHA256(),
        )
        headers["authorization"] = (
            f"{ALGORITHM} PublicKeyId={self.public_key_id}, SignedHeaders={';'.join(sorted(headers))}, "
            f"Signature={base64.b64encode(signature).decode('ascii')}"
        )
        return headers
