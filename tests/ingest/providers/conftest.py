"""Fixtures for the push verifiers: published vectors, accounts, deliveries, and a throwaway PKI.

The PKI stands in for Amazon's: a CA the tests create, a "SNS signing certificate" issued by it for
sns.amazonaws.com, and TLS server certificates for a local HTTPS server that plays
``sns.<region>.amazonaws.com`` (reached through an injected aiohttp resolver, see :class:`StaticResolver`).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from ingest.delivery import IncomingDelivery, ResolvedAccount
from paystream.config import AccountConfig

VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "vectors"


@pytest.fixture(scope="session")
def load_vector() -> Callable[[str], dict[str, Any]]:
    """A published vector file from tests/fixtures/vectors (copied from /work/shared/vectors, see README)."""

    def load(name: str) -> dict[str, Any]:
        return json.loads((VECTORS / name).read_text())  # type: ignore[no-any-return]

    return load


@pytest.fixture(scope="session")
def make_account() -> Callable[..., ResolvedAccount]:
    def make(provider: str, secrets: tuple[str, ...] | list[str] = (), **config: Any) -> ResolvedAccount:
        return ResolvedAccount(
            provider=provider,
            name="test-account",
            config=AccountConfig(**config),
            secrets=tuple(SecretStr(secret) for secret in secrets),
        )

    return make


@pytest.fixture(scope="session")
def make_delivery() -> Callable[..., IncomingDelivery]:
    def make(provider: str, body: bytes, headers: Mapping[str, str], received_at: float) -> IncomingDelivery:
        return IncomingDelivery(
            provider=provider,
            account="test-account",
            body=body,
            headers={name.lower(): value for name, value in headers.items()},
            received_at=received_at,
        )

    return make


class StaticResolver(AbstractResolver):
    """Resolves chosen host names to 127.0.0.1:<port>; everything else fails (tests never leave the box)."""

    def __init__(self, targets: Mapping[str, int]) -> None:
        self.targets = dict(targets)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.targets:
            raise OSError(f"test resolver: {host} is not a test host")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self.targets[host],
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Pki:
    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    ca_pem: bytes

    def issue(
        self,
        names: tuple[str, ...],
        *,
        not_before: dt.datetime = dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after: dt.datetime = dt.datetime(2040, 1, 1, tzinfo=dt.UTC),
    ) -> tuple[rsa.RSAPrivateKey, x509.Certificate, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return key, cert, cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only the test CA (hostname checks on, as in production)."""
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    def server_context(self, host: str) -> ssl.SSLContext:
        key, _, cert_pem = self.issue((host,))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as scratch:
            cert_file, key_file = Path(scratch, "cert.pem"), Path(scratch, "key.pem")
            cert_file.write_bytes(cert_pem)
            key_file.write_bytes(key_pem)
            context.load_cert_chain(cert_file, key_file)
        return context


@pytest.fixture(scope="session")
def pki() -> Pki:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paystream test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pki(key, cert, cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="session")
def sns_signer(pki: Pki) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A signing key and its certificate, issued by the test CA for sns.amazonaws.com (2020-2040)."""
    key, _, pem = pki.issue(("sns.amazonaws.com",))
    return key, pem


@pytest.fixture(scope="session")
def resolver_factory() -> Callable[[Mapping[str, int]], StaticResolver]:
    return StaticResolver
