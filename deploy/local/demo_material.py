"""Throw-away keys and secrets for `make run`'s demo, generated once into .local/demo/.

Nothing here is a real credential: the demo's providers are the local test provider and the traffic
generator, which sign with these same keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / ".local" / "demo"
CONFIG = ROOT / "deploy" / "local" / "demo.toml"
SNS_CERT_NAME = "SimpleNotificationService-paystream-demo.pem"
SNS_CERT_URL = f"https://sns.eu-west-1.amazonaws.com/{SNS_CERT_NAME}"
SNS_TOPIC_ARN = "arn:aws:sns:eu-west-1:000000000000:paystream-demo-ipn"
AMAZON_PAY_KEY_ID = "DEMO-PUBLIC-KEY-ID"
INGEST_URL = "http://127.0.0.1:8080"
PROVIDER_PORT = 8900


@dataclass(frozen=True)
class DemoMaterial:
    env: dict[str, str]  # PAYSTREAM_DEMO_* secrets (referenced by demo.toml) and PAYSTREAM_CONFIG_FILE
    amazon_pay_public_key: Path
    sns_private_key: rsa.RSAPrivateKey

    @property
    def stripe_secret(self) -> str:
        return self.env["PAYSTREAM_DEMO_STRIPE_WHSEC"]

    @property
    def adyen_key(self) -> str:
        return self.env["PAYSTREAM_DEMO_ADYEN_HMAC_KEY"]

    @property
    def standard_secret(self) -> str:
        return self.env["PAYSTREAM_DEMO_STANDARD_SECRET"]

    @property
    def observation_token(self) -> str:
        return self.env["PAYSTREAM_DEMO_OBSERVATION_TOKEN"]


def _key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def _sns_certificate(key: rsa.RSAPrivateKey, path: Path) -> None:
    if path.exists():
        return
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sns.amazonaws.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def prepare() -> DemoMaterial:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "sns-certs").mkdir(exist_ok=True)
    env_file = DEMO_DIR / "env.json"
    if env_file.exists():
        env = json.loads(env_file.read_text())
    else:
        env = {
            "PAYSTREAM_DEMO_STRIPE_WHSEC": "whsec_" + secrets.token_hex(16),
            "PAYSTREAM_DEMO_STRIPE_API_KEY": "sk_test_" + secrets.token_hex(12),
            "PAYSTREAM_DEMO_MOLLIE_API_KEY": "test_" + secrets.token_hex(12),
            "PAYSTREAM_DEMO_ADYEN_HMAC_KEY": secrets.token_hex(32).upper(),
            "PAYSTREAM_DEMO_STANDARD_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
            "PAYSTREAM_DEMO_OBSERVATION_TOKEN": secrets.token_urlsafe(24),
        }
        env_file.write_text(json.dumps(env, indent=2))
        env_file.chmod(0o600)
    amazon_key = _key(DEMO_DIR / "amazon-pay-private.pem")
    public_path = DEMO_DIR / "amazon-pay-public.pem"
    public_path.write_bytes(amazon_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    sns_key = _key(DEMO_DIR / "sns-signing-private.pem")
    _sns_certificate(sns_key, DEMO_DIR / "sns-certs" / SNS_CERT_NAME)
    return DemoMaterial(
        env={**env, "PAYSTREAM_CONFIG_FILE": str(CONFIG)},
        amazon_pay_public_key=public_path,
        sns_private_key=sns_key,
    )
