"""Kafka client set-up shared by every process: producer/consumer factories and topic creation.

The producer is always ``acks=all`` and idempotent: a record ingest acknowledges to a provider is on
every in-sync replica, and producer retries never write it twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from paystream.config import KafkaSettings, Settings, TopicSettings
from paystream.errors import InfrastructureError
from paystream.logs import get_logger

log = get_logger(__name__)


def connection_options(kafka: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    return options


def make_producer(settings: Settings, *, client_suffix: str = "producer", **overrides: Any) -> AIOKafkaProducer:
    """An idempotent ``acks=all`` producer with a short linger (latency first, batching under load)."""
    kafka = settings.kafka
    options = {
        **connection_options(kafka),
        "client_id": f"{kafka.client_id}-{client_suffix}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": kafka.linger_ms,
        "max_batch_size": kafka.max_batch_size,
        "max_request_size": kafka.max_request_size,
        "compression_type": None,
        **overrides,
    }
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None, client_suffix: str = "consumer", **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (at-least-once) and reads committed data only."""
    kafka = settings.kafka
    options = {
        **connection_options(kafka),
        "client_id": f"{kafka.client_id}-{client_suffix}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        **overrides,
    }
    return AIOKafkaConsumer(*topics, **options)


def topic_specs(topics: TopicSettings) -> list[NewTopic]:
    specs = []
    for name in topics.all_names():
        specs.append(
            NewTopic(
                name=name,
                num_partitions=topics.partitions,
                replication_factor=topics.replication_factor,
                topic_configs={
                    "retention.ms": str(topics.retention_ms(name)),
                    "cleanup.policy": topics.cleanup_policy(name),
                    "min.insync.replicas": str(min(2, topics.replication_factor)),
                },
            )
        )
    return specs


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the topics of DESIGN §4.2 that do not exist yet; existing topics are left as they are.

    Returns the names created. Idempotent, and safe when several processes start at once.
    """
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id=f"{settings.kafka.client_id}-admin")
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings.topics) if spec.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        created: list[str] = []
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # another process won the race: fine
                error = for_code(code)
                raise InfrastructureError(f"cannot create topic {name}: {error.__name__} ({topic_error[2:]})")
        if created:
            log.info("topics_created", topics=created, partitions=settings.topics.partitions)
        return created
    except (KafkaError, TimeoutError, OSError) as exc:
        raise InfrastructureError(
            f"cannot create topics on {settings.kafka.bootstrap}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        await admin.close()


async def check_metadata(bootstrap: str, *, timeout_s: float = 5.0) -> int:
    """One metadata round trip; returns the number of brokers. Raises on failure."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        description = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return len(description.get("brokers", []))
    finally:
        await admin.close()
