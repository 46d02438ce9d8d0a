"""Sentinel secrets for the leak test (test_rel_secrets_never_leak.py): their values, the configuration that
references them, every encoded form a leak could take, and the scanner that looks for those forms.

A leak rarely looks like the secret as configured: a key may be logged as the bytes it decodes to (hex), a
record value is archived as base64 (so a secret inside it appears base64-encoded at any of three byte
alignments), a PEM private key may leak one line at a time or as DER. :func:`needles` lists all of these;
each is long enough (>= 12 characters) that finding it by chance is impossible.
"""

from __future__ import annotations

import base64
import re
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MIN_NEEDLE = 12
DER_WINDOW = 24  # bytes of a private key's DER searched at a time (hex / base64 of any window is a leak)


@dataclass(frozen=True)
class Secret:
    name: str
    value: str  # as configured
    material: tuple[bytes, ...] = ()  # key bytes derived from it (decoded key, DER): searched as hex / base64


def _b64_alignments(data: bytes) -> list[bytes]:
    """The base64 text ``data`` produces inside any larger base64 blob, at each of the 3 byte alignments:
    only the characters that depend on ``data`` alone (the first and last may mix with neighbours)."""
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).rstrip(b"=")
        start = -(-shift * 8 // 6)  # ceil: characters touching the padding bytes
        end = (shift + len(data)) * 8 // 6  # floor: the last character may mix with what follows
        forms.append(encoded[start:end])
    return forms


def _encodings(data: bytes) -> set[bytes]:
    forms = {data.hex().encode(), data.hex().upper().encode()}
    for form in _b64_alignments(data):
        forms |= {form, form.replace(b"+", b"-").replace(b"/", b"_")}
    return forms


def _windows(data: bytes) -> Iterable[bytes]:
    if len(data) <= DER_WINDOW * 2:
        yield data
        return
    for start in range(0, len(data) - DER_WINDOW + 1, DER_WINDOW):
        yield data[start:start + DER_WINDOW]


def needles(secret: Secret) -> dict[bytes, str]:
    """Every byte string whose presence means ``secret`` leaked → the form's description."""
    found: dict[bytes, str] = {}
    lines = [line for line in secret.value.splitlines() if line and not line.startswith("-----")]
    if len(lines) > 1:  # a PEM: each body line on its own
        for number, line in enumerate(lines, 1):
            found[line.encode()] = f"PEM line {number}"
    else:
        raw = secret.value.encode()
        found[raw] = "as configured"
        found.setdefault(urllib.parse.quote(secret.value, safe="").encode(), "URL-encoded")
        found.setdefault(secret.value.replace("/", "\\/").encode(), "JSON-escaped")
        for form in _encodings(raw):
            found.setdefault(form, "hex/base64 of the value")
    for material in secret.material:
        for window in _windows(material):
            for form in _encodings(window):
                found.setdefault(form, "hex/base64 of the key bytes")
    return {needle: how for needle, how in found.items() if len(needle) >= MIN_NEEDLE}


@dataclass(frozen=True)
class Finding:
    where: str
    secret: str
    form: str

    def __str__(self) -> str:
        return f"{self.where}: {self.secret} ({self.form})"


@dataclass
class Scanner:
    secrets: list[Secret]
    _needles: list[tuple[bytes, str, str]] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)  # location → bytes looked at

    def __post_init__(self) -> None:
        self._needles = [(needle, s.name, how) for s in self.secrets for needle, how in needles(s).items()]

    def scan(self, where: str, data: bytes) -> list[Finding]:
        self.scanned[where] = self.scanned.get(where, 0) + len(data)
        return [Finding(where, name, how) for needle, name, how in self._needles if needle in data]


def _pem_key() -> tuple[str, bytes, bytes]:
    """A fresh RSA key: (PKCS#8 PEM text, its DER, the public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, der, public


@dataclass
class Sentinels:
    """One value per kind of secret paystream holds, unique to this run."""

    tag: str
    stripe_webhook: str
    stripe_webhook_next: str
    standard_key: bytes
    adyen_hex: str
    stripe_api_key: str
    stripe_api_key_revoked: str
    mollie_api_key: str
    observation_token: str
    observation_token_file: str
    amazon_pem: str
    amazon_der: bytes
    amazon_public_pem: bytes
    amazon_pem_wrong: str
    amazon_der_wrong: bytes
    aws_access_key_id: str
    aws_secret_access_key: str
    kafka_password: str
    canary: str  # not a secret: sent in a payload, so it must be found (the scanner sees the payloads)

    @classmethod
    def generate(cls) -> Sentinels:
        tag = secrets.token_hex(6)
        pem, der, public = _pem_key()
        wrong_pem, wrong_der, _ = _pem_key()
        return cls(
            tag=tag,
            stripe_webhook=f"whsec_LeakSentinelStripeWebhook{tag}",
            stripe_webhook_next=f"whsec_LeakSentinelStripeRotated{tag}",
            standard_key=b"LeakSentinelStandard" + secrets.token_bytes(12),
            adyen_hex=secrets.token_hex(32).upper(),
            stripe_api_key=f"sk_test_LeakSentinelStripeApi{tag}",
            stripe_api_key_revoked=f"sk_test_LeakSentinelRevoked{tag}",
            mollie_api_key=f"test_LeakSentinelMollieApi{tag}",
            observation_token=f"LeakSentinelObservationToken-{tag}",
            observation_token_file=f"LeakSentinelObservationFileToken-{tag}",
            amazon_pem=pem, amazon_der=der, amazon_public_pem=public,
            amazon_pem_wrong=wrong_pem, amazon_der_wrong=wrong_der,
            aws_access_key_id=f"AKIALEAK{tag.upper()}",
            aws_secret_access_key=f"LeakSentinelAwsSecret/{tag}+Key",
            kafka_password=f"LeakSentinelKafkaSasl{tag}",
            canary=f"LeakCanaryInAPayload{tag}",
        )

    @property
    def standard_secret(self) -> str:
        return "whsec_" + base64.b64encode(self.standard_key).decode()

    def all(self) -> list[Secret]:
        return [
            Secret("stripe webhook secret", self.stripe_webhook),
            Secret("stripe webhook secret (rotation)", self.stripe_webhook_next),
            Secret("standard webhooks secret", self.standard_secret, (self.standard_key,)),
            Secret("adyen hmac key", self.adyen_hex, (bytes.fromhex(self.adyen_hex),)),
            Secret("stripe api key", self.stripe_api_key),
            Secret("stripe api key (revoked)", self.stripe_api_key_revoked),
            Secret("mollie api key", self.mollie_api_key),
            Secret("observation token", self.observation_token),
            Secret("observation token (file)", self.observation_token_file),
            Secret("amazon pay private key", self.amazon_pem, (self.amazon_der,)),
            Secret("amazon pay private key (2nd account)", self.amazon_pem_wrong, (self.amazon_der_wrong,)),
            Secret("aws access key id", self.aws_access_key_id),
            Secret("aws secret access key", self.aws_secret_access_key),
            Secret("kafka sasl password", self.kafka_password),
        ]

    def environment(self, folder: Path) -> dict[str, str]:
        """The secret files written to ``folder`` and the variables the TOML file references."""
        files = {
            "stripe-webhook-next": self.stripe_webhook_next, "standard-secret": self.standard_secret,
            "stripe-api-key-revoked": self.stripe_api_key_revoked, "observation-token": self.observation_token_file,
            "amazon-pay.pem": self.amazon_pem,
        }
        for name, value in files.items():
            (folder / name).write_text(value)
        return {
            "LEAK_STRIPE_WHSEC": self.stripe_webhook, "LEAK_ADYEN_HMAC_KEY": self.adyen_hex,
            "LEAK_STRIPE_API_KEY": self.stripe_api_key, "LEAK_MOLLIE_API_KEY": self.mollie_api_key,
            "LEAK_OBSERVATION_TOKEN": self.observation_token, "LEAK_AMAZON_PEM_WRONG": self.amazon_pem_wrong,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id, "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "PAYSTREAM_KAFKA__SASL_USERNAME": "leak-test", "PAYSTREAM_KAFKA__SASL_PASSWORD": self.kafka_password,
        }


def accounts_toml(folder: Path, *, double_url: str, closed_url: str, allowed_topic: str, amazon_key_id: str) -> str:
    """The TOML file of the leak test: every secret by reference (env: and file:), never inline."""
    return f"""
observation_tokens = ["env:LEAK_OBSERVATION_TOKEN", "file:{folder}/observation-token"]

[accounts.stripe.main]
secrets = ["env:LEAK_STRIPE_WHSEC", "file:{folder}/stripe-webhook-next"]
api_key = "env:LEAK_STRIPE_API_KEY"
api_base_url = "{double_url}/stripe"

[accounts.stripe.revoked]
api_key = "file:{folder}/stripe-api-key-revoked"
api_base_url = "{double_url}/stripe"

[accounts.adyen.main]
secrets = ["env:LEAK_ADYEN_HMAC_KEY"]

[accounts.standard.main]
secrets = ["file:{folder}/standard-secret"]

[accounts.standard.main.status_map]
"payment.succeeded" = "captured"

[accounts.mollie.main]
api_key = "env:LEAK_MOLLIE_API_KEY"
api_base_url = "{double_url}/mollie"
hint_rate_per_s = 50.0
hint_burst = 50

[accounts.mollie.down]
api_key = "env:LEAK_MOLLIE_API_KEY"
api_base_url = "{closed_url}/mollie"

[accounts.amazon_pay.eu-main]
allowed_topic_arns = ["{allowed_topic}"]
public_key_id = "{amazon_key_id}"
private_key = "file:{folder}/amazon-pay.pem"
api_base_url = "{double_url}/amazon_pay"
api_sandbox = true

[accounts.amazon_pay.eu-wrongkey]
public_key_id = "LEAKTEST-KEY-THE-PROVIDER-DOES-NOT-KNOW"
private_key = "env:LEAK_AMAZON_PEM_WRONG"
api_base_url = "{double_url}/amazon_pay"
api_sandbox = true
"""


def printable(data: bytes, limit: int = 200) -> str:
    return re.sub(rb"[^\x20-\x7e]", b".", data[:limit]).decode()
