"""SNS signing certificates: which URLs may be fetched, and a cache that fetches them safely.

An SNS message names the certificate that signed it (``SigningCertURL``). The URL comes from the
unverified message, so it is checked *before* any network access (https, an ``sns.<region>.amazonaws.com``
host, no userinfo / IP literal / odd port, a ``.pem`` path); otherwise anyone could make us fetch any URL
and then "verify" with their own key. The fetch itself follows no redirect, has a timeout and a size
cap, and the certificate must be issued for ``sns.amazonaws.com``.

:class:`CertificateStore` caches by URL and can be pre-seeded from a directory of PEM files (the file
name is the URL's last path segment, e.g. ``SimpleNotificationService-<hash>.pem``) for air-gapped
deployments and tests. Tests reach a local HTTPS server by injecting an aiohttp resolver that maps the
SNS host to 127.0.0.1 and a port, plus an ``ssl`` context trusting their own CA — the URL, TLS server
name check and every rule stay exactly as in production.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from yarl import URL

from paystream.errors import ConfigurationError, InfrastructureError, SignatureError

SNS_HOST = re.compile(r"sns\.[a-zA-Z0-9-]{3,}\.amazonaws\.com(\.cn)?")
# The brief's pattern above also matches S3 endpoints such as sns.s3-external-1.amazonaws.com, which
# serve any bucket named "sns": the label must also be a real region name (us-east-1, us-gov-west-1,
# cn-north-1, ap-southeast-2, ...).
SNS_REGION = re.compile(r"sns\.[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}\.amazonaws\.com(\.cn)?")
CERTIFICATE_NAMES = ("sns.amazonaws.com",)
# RFC 3986 characters only: no whitespace or backslash that one URL parser drops and another keeps.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


class CertificateUnavailable(InfrastructureError):
    """The certificate could not be fetched right now (network, timeout, 5xx). Transient.

    Not a :class:`SignatureError` on purpose: SNS retries only on 5xx, so the HTTP layer must answer
    503 here, or a genuine IPN would be dropped for good.
    """

    code = "cert_fetch_failed"


# Every message names its certificate URL and real traffic uses a handful: remember the good ones
# (a refusal raises, and exceptions are never cached).
@functools.lru_cache(maxsize=256)
def validate_sns_url(url: str, *, code: str, require_pem: bool) -> str:
    """Return ``url`` if it is an https URL on an SNS host, else raise ``SignatureError(code=code)``."""
    if not _URL_CHARACTERS.fullmatch(url):
        raise SignatureError("URL contains characters outside RFC 3986", code=code)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise SignatureError("URL has an invalid port", code=code) from exc
    host = parts.hostname or ""
    if parts.scheme != "https":
        raise SignatureError("URL is not https", code=code)
    if "@" in parts.netloc:
        raise SignatureError("URL carries userinfo", code=code)
    if port not in (None, 443):
        raise SignatureError("URL names a port other than 443", code=code)
    if SNS_HOST.fullmatch(host) is None or SNS_REGION.fullmatch(host) is None or _is_ip_literal(host):
        raise SignatureError(f"{host!r} is not an SNS host", code=code)
    if require_pem and (not parts.path.endswith(".pem") or parts.query or parts.fragment):
        raise SignatureError("URL path is not a .pem file", code=code)
    # aiohttp parses with yarl: make sure it sees the same host, so the check above is the one that counts.
    parsed = URL(url)
    if parsed.host != host or parsed.port != 443:
        raise SignatureError("URL parses ambiguously", code=code)
    return url


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def load_certificate(pem: bytes, *, names: tuple[str, ...] = CERTIFICATE_NAMES) -> x509.Certificate:
    """Parse a PEM certificate and insist that it is an RSA certificate issued for one of ``names``."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SignatureError("signing certificate is not a PEM certificate", code="cert_rejected") from exc
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        raise SignatureError("signing certificate does not hold an RSA key", code="cert_rejected")
    if not set(_certificate_names(certificate)) & set(names):
        raise SignatureError(f"signing certificate is not issued for {', '.join(names)}", code="cert_rejected")
    return certificate


def _certificate_names(certificate: x509.Certificate) -> list[str]:
    found = [str(attribute.value) for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return found
    return found + san.value.get_values_for_type(x509.DNSName)


class CertificateStore:
    """SNS signing certificates by URL: pre-seeded ones first, then fetched over HTTPS and cached.

    ``preseed_dir`` holds ``*.pem`` files named like the URL's last path segment; ``preseeded`` maps a
    full URL or such a file name to PEM bytes. Pre-seeded certificates still pass :func:`load_certificate`
    (a bad one is a :class:`ConfigurationError` at start-up). ``ssl_context`` and ``resolver`` are for
    tests and unusual networks; by default the system trust store and DNS are used.
    """

    def __init__(
        self,
        *,
        preseed_dir: Path | None = None,
        preseeded: Mapping[str, bytes] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
        timeout_s: float = 5.0,
        max_bytes: int = 64 * 1024,
        max_cached: int = 64,
        names: tuple[str, ...] = CERTIFICATE_NAMES,
    ) -> None:
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._resolver = resolver
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_bytes = max_bytes
        self._max_cached = max_cached
        self._names = names
        self._seeded: dict[str, x509.Certificate] = {}
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        self.fetch_count = 0  # how many certificates went over the network (tests, metrics)
        sources = dict(preseeded or {})
        if preseed_dir is not None:
            sources.update({path.name: path.read_bytes() for path in sorted(preseed_dir.glob("*.pem"))})
        for key, pem in sources.items():
            try:
                self._seeded[key] = load_certificate(pem, names=names)
            except SignatureError as exc:
                raise ConfigurationError(f"pre-seeded SNS certificate {key}: {exc.detail}") from exc

    async def get(self, url: str) -> x509.Certificate:
        """The certificate at ``url`` (validated again here: the store never fetches an unchecked URL)."""
        validate_sns_url(url, code="untrusted_cert_url", require_pem=True)
        seeded = self._seeded.get(url) or self._seeded.get(urlsplit(url).path.rsplit("/", 1)[-1])
        if seeded is not None:
            return seeded
        cached = self._cache.get(url)
        if cached is not None:
            self._cache.move_to_end(url)
            return cached
        lock = self._locks.setdefault(url, asyncio.Lock())
        try:
            async with lock:  # concurrent deliveries naming one new certificate fetch it once
                cached = self._cache.get(url)
                if cached is None:
                    cached = load_certificate(await self._fetch(url), names=self._names)
                    self._remember(url, cached)
        finally:
            self._locks.pop(url, None)
        return cached

    def _remember(self, url: str, certificate: x509.Certificate) -> None:
        self._cache[url] = certificate
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    async def _fetch(self, url: str) -> bytes:
        self.fetch_count += 1
        try:
            async with self._client().get(url, allow_redirects=False, timeout=self._timeout) as response:
                if response.status >= 500:
                    raise CertificateUnavailable(f"certificate host answered {response.status}")
                if response.status != 200:
                    raise SignatureError(
                        f"certificate URL answered {response.status} (redirects are not followed)",
                        code="cert_rejected",
                    )
                return await self._read_capped(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CertificateUnavailable(f"cannot fetch signing certificate: {type(exc).__name__}") from exc

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        too_large = SignatureError(f"certificate is over {self._max_bytes} bytes", code="cert_rejected")
        if response.content_length is not None and response.content_length > self._max_bytes:
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > self._max_bytes:
                raise too_large
        return bytes(body)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, resolver=self._resolver)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
