"""processors/kafka_client.connection_config: the engine's (librdkafka's) Kafka connection from the same
KafkaSettings as every aiokafka client of the other processes (paystream.kafka.connection_options)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from paystream.config import KafkaSettings
from paystream.errors import ConfigurationError
from paystream.kafka import connection_options
from processors.kafka_client import connection_config

PASSWORD = "s3cr3t-scram-password"


@pytest.fixture(scope="module")
def cluster_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate in PEM, like Strimzi's <cluster>-cluster-ca-cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def librdkafka(kafka: KafkaSettings) -> dict[str, Any]:
    return connection_config(kafka, client_id="paystream-processor").as_librdkafka_dict()


def accepted_by_librdkafka(config: dict[str, Any]) -> None:
    """librdkafka checks property names and values (and loads the CA) when a client is created; no broker is
    contacted before the first poll."""
    consumer = Consumer({**config, "group.id": "config-check"})
    consumer.close()


def test_plaintext_is_the_bootstrap_and_client_id_only() -> None:
    kafka = KafkaSettings(bootstrap="k1:9092,k2:9092", sasl_username="ignored", ssl_cafile=Path("/nowhere.crt"))
    config = librdkafka(kafka)
    assert config == {"bootstrap.servers": "k1:9092,k2:9092", "client.id": "paystream-processor",
                      "security.protocol": "plaintext"}
    accepted_by_librdkafka(config)


def test_strimzi_sasl_ssl_with_scram_sha_512_and_the_cluster_ca(cluster_ca: Path) -> None:
    kafka = KafkaSettings(bootstrap="cluster-kafka-bootstrap:9093", security_protocol="SASL_SSL",
                          sasl_mechanism="SCRAM-SHA-512", sasl_username="paystream-processor",
                          sasl_password=PASSWORD, ssl_cafile=cluster_ca)
    config = librdkafka(kafka)
    assert config == {
        "bootstrap.servers": "cluster-kafka-bootstrap:9093", "client.id": "paystream-processor",
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "paystream-processor", "sasl.password": PASSWORD, "ssl.ca.location": str(cluster_ca),
    }
    accepted_by_librdkafka(config)
    # The aiokafka clients of the other processes get the same broker, protocol and credentials.
    options = connection_options(kafka)
    assert (options["bootstrap_servers"], options["security_protocol"], options["sasl_mechanism"],
            options["sasl_plain_username"], options["sasl_plain_password"]) == (
        config["bootstrap.servers"], "SASL_SSL", config["sasl.mechanism"], config["sasl.username"],
        config["sasl.password"])
    assert options["ssl_context"] is not None


def test_the_password_never_shows_in_the_config_s_repr(cluster_ca: Path) -> None:
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                          sasl_password=PASSWORD, ssl_cafile=cluster_ca)
    config = connection_config(kafka, client_id="x")
    assert PASSWORD not in repr(config) and PASSWORD not in str(config)


def test_sasl_without_a_mechanism_is_plain_as_for_aiokafka() -> None:
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u",
                          sasl_password=PASSWORD)
    config = librdkafka(kafka)
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("sasl_plaintext", "PLAIN")
    assert "ssl.ca.location" not in config  # no TLS, so no CA even if one were configured
    accepted_by_librdkafka(config)


def test_ssl_without_sasl_carries_the_ca_and_no_credentials(cluster_ca: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=cluster_ca, sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="u", sasl_password=PASSWORD)
    config = librdkafka(kafka)
    assert config["security.protocol"] == "ssl" and config["ssl.ca.location"] == str(cluster_ca)
    assert not [name for name in config if name.startswith("sasl.")]
    accepted_by_librdkafka(config)


def test_a_missing_ca_file_is_refused_by_librdkafka_at_creation(tmp_path: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.crt")
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location"):
        accepted_by_librdkafka(librdkafka(kafka))


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize(("username", "password"), [(None, PASSWORD), ("", PASSWORD), ("u", None)])
def test_sasl_without_credentials_is_a_configuration_error(protocol: str, username: str | None,
                                                            password: str | None) -> None:
    kafka = KafkaSettings(security_protocol=protocol, sasl_mechanism="SCRAM-SHA-512",
                          sasl_username=username, sasl_password=password)
    with pytest.raises(ConfigurationError) as raised:
        connection_config(kafka, client_id="x")
    message = str(raised.value)
    assert protocol in message
    assert "PAYSTREAM_KAFKA__SASL_USERNAME" in message and "PAYSTREAM_KAFKA__SASL_PASSWORD" in message
    assert PASSWORD not in message
