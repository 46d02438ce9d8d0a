"""The processor's internal topics (its inputs topic and its state store's changelog) get their size limit and
compression from settings, created that way or altered to it before the engine starts.

Quix Streams creates a missing changelog with only its retention derived from the input topics, so a payment
record that grew past the broker's default ``max.message.bytes`` (1 MiB) would fail the changelog write and
stall the worker. The per-payment record is capped below ``internal_max_message_bytes`` (records past the cap
are quarantined: :mod:`processors.reconcile`), and the topics here accept that much. The changelog's name is
Quix Streams' documented internal name ``changelog__{consumer group}--{topic}--{store}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from paystream.config import ProcessorSettings, Settings
from paystream.errors import ConfigurationError, InfrastructureError
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


def two_stage_changelog(conf: ProcessorSettings) -> str:
    """The changelog of the processor's two-stage topology (before the single stage): its store belonged to the
    reconcile stage over the internal topic alone."""
    return changelog_topic(conf.app_id, conf.inputs_topic())


def migrate_store(settings: Settings, conf: ProcessorSettings, new_changelog: str, *,
                  progress: Callable[[str], None] = print) -> int:
    """Copy the two-stage store's changelog into the single stage's, partition by partition (the keys are the
    same payment keys, the values the same records, the headers the same column family and processed offsets
    of the inputs topic, whose committed offsets the single stage keeps): the single-stage worker then restores
    every payment's record from it. Run once, with every worker stopped (``paystream process --migrate-store``).
    Returns the records copied; 0 when there is nothing to migrate."""
    connection = connection_config(settings.kafka, client_id=f"{settings.kafka.client_id}-store-migration")
    admin = AdminClient(connection.as_librdkafka_dict())
    old = two_stage_changelog(conf)
    topics = admin.list_topics(timeout=TIMEOUT_S).topics
    if old not in topics:
        progress(f"no two-stage store to migrate ({old} does not exist)")
        return 0
    if new_changelog in topics:
        raise InfrastructureError(f"{new_changelog} exists already: the store was migrated, or a single-stage worker "
                                  "started before the migration (delete that topic and migrate again)")
    partitions = len(topics[old].partitions)
    for future in admin.create_topics([NewTopic(new_changelog, num_partitions=partitions,
                                                replication_factor=settings.topics.replication_factor,
                                                config={"cleanup.policy": "compact", **limits(conf)})]).values():
        future.result(TIMEOUT_S)
    consumer = Consumer({**connection.as_librdkafka_dict(), "group.id": f"{conf.app_id}-store-migration",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    producer = Producer({**connection.as_librdkafka_dict(), "enable.idempotence": True, "acks": "all",
                         "message.max.bytes": settings.kafka.max_request_size})
    copied = 0
    try:
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(ConfluentPartition(old, partition), timeout=TIMEOUT_S)
            consumer.assign([ConfluentPartition(old, partition, low)])
            position = low
            while position < high:
                for message in consumer.consume(num_messages=1000, timeout=1.0):
                    if message.error() is not None:
                        raise InfrastructureError(f"reading {old}/{partition}: {message.error()}")
                    position = message.offset() + 1
                    # The headers too: Quix Streams' column family and the input offset each change was made at
                    # (a restore skips changes past the committed offsets).
                    producer.produce(new_changelog, value=message.value(), key=message.key(), partition=partition,
                                     headers=message.headers())
                    copied += 1
                producer.poll(0)
            progress(f"{old}[{partition}] -> {new_changelog}[{partition}]: offsets {low}..{high}")
        if producer.flush(TIMEOUT_S) != 0:
            raise InfrastructureError(f"records not acknowledged by {new_changelog} in {TIMEOUT_S:.0f} s")
    finally:
        consumer.close()
    progress(f"copied {copied} records; the two-stage store can be deleted once the single stage runs: {old}")
    return copied


def refuse_unmigrated(settings: Settings, conf: ProcessorSettings, new_changelog: str) -> None:
    """A single-stage worker must not start on an empty store while the two-stage one still holds the state."""
    connection = connection_config(settings.kafka, client_id=f"{settings.kafka.client_id}-admin")
    topics = AdminClient(connection.as_librdkafka_dict()).list_topics(timeout=TIMEOUT_S).topics
    if two_stage_changelog(conf) in topics and new_changelog not in topics:
        raise ConfigurationError(
            f"the processor's state is still in the two-stage store {two_stage_changelog(conf)}: stop every worker, "
            "run `paystream process --migrate-store` once, then start them (docs/operations.md, "
            "'Upgrading to the single-stage processor')")
