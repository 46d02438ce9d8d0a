"""The Kafka security settings of :class:`~paystream.config.KafkaSettings` as faust broker credentials.

faust does not take aiokafka's ``security_protocol`` / ``sasl_*`` / ``ssl_context`` options directly: its
aiokafka driver derives them from ``App(broker_credentials=...)`` (``credentials_to_aiokafka_auth`` in
faust/transport/drivers/aiokafka.py), for the consumer, the producer and the topic-creating client alike.
The mapping (faust-streaming 0.15.3):

* ``SSLCredentials(context)`` → ``security_protocol="SSL"``, ``ssl_context=context``;
* ``SASLCredentials(mechanism=..., username=..., password=...)`` → ``SASL_PLAINTEXT``;
  with ``ssl_context=...`` → ``SASL_SSL`` (the protocol follows the presence of the context).

The SSL context is built exactly as :func:`paystream.kafka.connection_options` builds it for our own
aiokafka clients, so the processor trusts the same CA (Strimzi: the cluster CA) as every other process.
"""

from __future__ import annotations

import ssl

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from paystream.config import KafkaSettings
from paystream.errors import ConfigurationError

# aiokafka's default when no mechanism is configured (paystream.kafka leaves it unset in that case too).
DEFAULT_SASL_MECHANISM = "PLAIN"


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    context: ssl.SSLContext = create_ssl_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    return context


def faust_broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """``None`` for PLAINTEXT (faust's default), else the credentials faust turns into the same aiokafka
    security options :func:`paystream.kafka.connection_options` uses.

    Raises :class:`ConfigurationError` for a SASL protocol without a username or password (aiokafka would
    only fail later, deep inside the first connection attempt).
    """
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(_ssl_context(kafka))
    if not kafka.sasl_username or kafka.sasl_password is None:
        raise ConfigurationError(
            f"kafka.security_protocol={protocol} needs kafka.sasl_username and kafka.sasl_password "
            "(PAYSTREAM_KAFKA__SASL_USERNAME / PAYSTREAM_KAFKA__SASL_PASSWORD)"
        )
    return SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        mechanism=kafka.sasl_mechanism or DEFAULT_SASL_MECHANISM,
        # SASL_SSL ⇔ a context is given: faust derives the protocol from it.
        ssl_context=_ssl_context(kafka) if protocol == "SASL_SSL" else None,
    )
