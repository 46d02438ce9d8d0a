"""The processor's internal topics (its inputs topic and its state store's changelog) get their size limit and
compression from settings, created that way or altered to it before the engine starts.

Quix Streams creates a missing changelog with only its retention derived from the input topics, so a payment
record that grew past the broker's default ``max.message.bytes`` (1 MiB) would fail the changelog write and
stall the worker. The per-payment record is capped below ``internal_max_message_bytes`` (records past the cap
are quarantined: :mod:`processors.reconcile`), and the topics here accept that much. The changelog's name is
Quix Streams' documented internal name ``changelog__{consumer group}--{topic}--{store}``.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from paystream.config import ProcessorSettings, Settings
from paystream.errors import InfrastructureError
from paystream.logs import get_logger
from processors.kafka_client import connection_config

log = get_logger(__name__)

STORE = "default"
TIMEOUT_S = 30.0


def changelog_topic(app_id: str, stream_topic: str, store: str = STORE) -> str:
    return f"changelog__{app_id}--{stream_topic}--{store}"


def limits(conf: ProcessorSettings) -> dict[str, str]:
    return {"max.message.bytes": str(conf.internal_max_message_bytes), "compression.type": conf.internal_compression}


def ensure_internal_topics(settings: Settings, conf: ProcessorSettings, *,
                           inputs: Iterable[tuple[str, dict[str, str]]]) -> None:
    """Create each ``(topic, extra config)`` with the size limits, or set the limits on an existing one."""
    connection = connection_config(settings.kafka, client_id=f"{settings.kafka.client_id}-admin")
    admin = AdminClient(connection.as_librdkafka_dict())
    wanted = {name: {**extra, **limits(conf)} for name, extra in inputs}
    try:
        existing = set(admin.list_topics(timeout=TIMEOUT_S).topics)
        missing = [NewTopic(name, num_partitions=settings.topics.partitions,
                            replication_factor=settings.topics.replication_factor, config=config)
                   for name, config in wanted.items() if name not in existing]
        for name, future in (admin.create_topics(missing, request_timeout=TIMEOUT_S).items() if missing else []):
            try:
                future.result(TIMEOUT_S)
                log.info("internal_topic_created", topic=name)
            except Exception as exc:  # another worker won the race: it created the same config
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        present = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in limits(conf).items()]) for name in wanted if name in existing]
        for future in (admin.incremental_alter_configs(present).values() if present else []):
            future.result(TIMEOUT_S)
    except Exception as exc:
        raise InfrastructureError(
            f"cannot prepare the processor's internal topics: {type(exc).__name__}: {exc}") from exc
