"""The Kafka connection of the processor's engine (librdkafka, through Quix Streams) from
:class:`~paystream.config.KafkaSettings`: the same broker, security protocol, SASL credentials and CA as
:func:`paystream.kafka.connection_options` gives every aiokafka client of the other processes, so one set of
``PAYSTREAM_KAFKA__*`` settings serves all of them (Strimzi: SCRAM-SHA-512 over TLS with the cluster CA)."""

from __future__ import annotations

from quixstreams.kafka import ConnectionConfig

from paystream.config import KafkaSettings
from paystream.errors import ConfigurationError


def connection_config(kafka: KafkaSettings, *, client_id: str) -> ConnectionConfig:
    """Raises :class:`ConfigurationError` for a SASL protocol without a username or password (librdkafka
    would only fail later, in the first connection attempt)."""
    protocol = kafka.security_protocol
    sasl = protocol.startswith("SASL_")
    if sasl and (not kafka.sasl_username or kafka.sasl_password is None):
        raise ConfigurationError(
            f"kafka.security_protocol={protocol} needs kafka.sasl_username and kafka.sasl_password "
            "(PAYSTREAM_KAFKA__SASL_USERNAME / PAYSTREAM_KAFKA__SASL_PASSWORD)"
        )
    return ConnectionConfig(
        bootstrap_servers=kafka.bootstrap,
        client_id=client_id,
        security_protocol=protocol.lower(),
        # aiokafka's default mechanism when none is configured is PLAIN; keep the two clients alike.
        sasl_mechanism=(kafka.sasl_mechanism or "PLAIN") if sasl else None,
        sasl_username=kafka.sasl_username if sasl else None,
        sasl_password=kafka.sasl_password if sasl else None,
        ssl_ca_location=str(kafka.ssl_cafile) if kafka.ssl_cafile and protocol in ("SSL", "SASL_SSL") else None,
    )
