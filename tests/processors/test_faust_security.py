"""faust_broker_credentials: our Kafka security settings reach the aiokafka clients faust builds.

The clients are built by faust's own driver code (the worker consumer factory and the producer factory of
faust/transport/drivers/aiokafka.py) and inspected without connecting.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import SecretStr

from paystream.config import KafkaSettings
from paystream.errors import ConfigurationError
from paystream.kafka import connection_options
from processors.faust_security import faust_broker_credentials

CA_NAME = "paystream-test-cluster-ca"


def _write_ca(directory: Path) -> Path:
    """A self-signed CA certificate (stands in for Strimzi's <cluster>-cluster-ca-cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _strimzi(cafile: Path) -> KafkaSettings:
    """What deploy/k8s/base/config.yaml + the processor StatefulSet configure."""
    return KafkaSettings(bootstrap="kafka.example:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username="paystream-processor", sasl_password=SecretStr("s3cret-scram"),
                         ssl_cafile=cafile)


def _trusts_test_ca(context: Any) -> bool:
    return isinstance(context, ssl.SSLContext) and any(
        ("commonName", CA_NAME) in rdn for cert in context.get_ca_certs() for rdn in cert["subject"]
    )


@pytest.fixture
def cafile(tmp_path: Path) -> Path:
    return _write_ca(tmp_path)


Clients = Callable[[KafkaSettings], tuple[AIOKafkaConsumer, AIOKafkaProducer]]


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    """Builds a real faust.App with the credentials and returns the aiokafka consumer and producer that
    faust's driver would start (never started here)."""
    built: list[tuple[Any, AIOKafkaConsumer, AIOKafkaProducer]] = []

    def build(kafka: KafkaSettings) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        app = faust.App(f"faust-security-{uuid.uuid4().hex[:8]}", broker="kafka://" + kafka.bootstrap,
                        broker_credentials=faust_broker_credentials(kafka), web_enabled=False, autodiscover=False)
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        producer = app.producer._new_producer()
        built.append((thread, consumer, producer))
        return consumer, producer

    yield build
    for thread, consumer, producer in built:
        await consumer.stop()
        await producer.stop()
        thread.thread_loop.close()


def test_plaintext_gives_no_credentials() -> None:
    assert faust_broker_credentials(KafkaSettings()) is None


def test_scram_over_tls_is_sasl_credentials_with_a_context(cafile: Path) -> None:
    credentials = faust_broker_credentials(_strimzi(cafile))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert _trusts_test_ca(credentials.ssl_context)


async def test_scram_over_tls_reaches_faust_consumer(cafile: Path, clients: Clients) -> None:
    consumer, _ = clients(_strimzi(cafile))
    client = consumer._client
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("paystream-processor", "s3cret-scram")
    assert _trusts_test_ca(client._ssl_context)
    assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert client._ssl_context.check_hostname


async def test_scram_over_tls_reaches_faust_producer(cafile: Path, clients: Clients) -> None:
    _, producer = clients(_strimzi(cafile))
    client = producer.client
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("paystream-processor", "s3cret-scram")
    assert _trusts_test_ca(client._ssl_context)


async def test_faust_consumer_matches_our_own_clients(cafile: Path, clients: Clients) -> None:
    kafka = _strimzi(cafile)
    ours = connection_options(kafka)
    consumer, _ = clients(kafka)
    client = consumer._client
    assert (client._security_protocol, client._sasl_mechanism, client._sasl_plain_username,
            client._sasl_plain_password) == (ours["security_protocol"], ours["sasl_mechanism"],
                                             ours["sasl_plain_username"], ours["sasl_plain_password"])


async def test_ssl_only_reaches_faust_consumer(cafile: Path, clients: Clients) -> None:
    kafka = KafkaSettings(bootstrap="kafka.example:9093", security_protocol="SSL", ssl_cafile=cafile)
    assert isinstance(faust_broker_credentials(kafka), SSLCredentials)
    consumer, _ = clients(kafka)
    assert consumer._client._security_protocol == "SSL"
    assert _trusts_test_ca(consumer._client._ssl_context)


async def test_sasl_plaintext_has_no_tls(clients: Clients) -> None:
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                          sasl_username="u", sasl_password=SecretStr("p"))
    consumer, _ = clients(kafka)
    assert consumer._client._security_protocol == "SASL_PLAINTEXT"
    assert consumer._client._sasl_mechanism == "SCRAM-SHA-256"
    assert consumer._client._ssl_context is None


def test_sasl_without_mechanism_defaults_to_plain_like_aiokafka() -> None:
    credentials = faust_broker_credentials(
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=SecretStr("p")))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.mechanism.value == "PLAIN"


def test_sasl_without_password_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="sasl_password"):
        faust_broker_credentials(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                               sasl_username="paystream-processor"))


def test_sasl_without_username_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="sasl_username"):
        faust_broker_credentials(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_password=SecretStr("p")))


def test_credentials_repr_hides_the_password(cafile: Path) -> None:
    assert "s3cret-scram" not in repr(faust_broker_credentials(_strimzi(cafile)))
