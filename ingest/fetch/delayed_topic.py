"""The delay store's topic (``payments.fetch.delayed.v1``): compacted, with at least as many partitions as the
requests topic (store partition *p* belongs to requests partition *p*, see ingest/fetch/delayed.py)."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from paystream.config import Settings
from paystream.errors import ConfigurationError, InfrastructureError
from paystream.kafka import connection_options
from paystream.logs import get_logger

log = get_logger(__name__)

# Compaction only reaches closed segments: rolling them hourly keeps the topic (and the read at assignment)
# close to the live entries instead of a week or a GiB of superseded and deleted ones.
SEGMENT_MS = 3600 * 1000
METADATA_WAIT_S = 10.0


async def ensure_delayed_topic(settings: Settings) -> int:
    """Create the store (compacted, as many partitions as fetch.requests) if it is missing, or add partitions
    when it has fewer than fetch.requests; return its partition count.

    Adding partitions is safe: store partition *p* keeps meaning requests partition *p*, and the new ones are
    empty because requests of those partitions could not be held before. Without the right to do it (e.g.
    no Alter ACL), the fetcher refuses to start: those requests would have nowhere to be held.
    """
    topics = settings.topics
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id=f"{settings.kafka.client_id}-admin")
    try:
        await admin.start()
        counts = await _partition_counts(admin)
        wanted = counts.get(topics.fetch_requests, topics.partitions)
        found = counts.get(topics.fetch_delayed)
        if found is not None and found >= wanted:
            return found
        if found is None:
            await _create(admin, settings, wanted)
        # A topic (or partitions) just created reach the broker's metadata a moment later, and adding
        # partitions to a topic that is itself still being created is refused: try again until the deadline.
        deadline = time.monotonic() + METADATA_WAIT_S
        while (have := (await _partition_counts(admin)).get(topics.fetch_delayed, 0)) < wanted:
            if time.monotonic() > deadline:
                break
            if have:
                await _grow(admin, topics.fetch_delayed, have, wanted)
            await asyncio.sleep(0.2)
    except KafkaError as exc:
        raise InfrastructureError(f"cannot check the delayed store {topics.fetch_delayed}: {exc!r}") from exc
    finally:
        await admin.close()
    if have < wanted:
        raise ConfigurationError(
            f"{topics.fetch_delayed} has {have} partitions, {topics.fetch_requests} has {wanted}: the delayed "
            f"store needs at least as many (add partitions to {topics.fetch_delayed})"
        )
    return have


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    # Metadata of every topic: naming one that does not exist could have the broker auto-create it.
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["error_code"] == 0}


async def _create(admin: AIOKafkaAdminClient, settings: Settings, partitions: int) -> None:
    name, rf = settings.topics.fetch_delayed, settings.topics.replication_factor
    spec = NewTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=rf,
        topic_configs={"cleanup.policy": "compact", "min.insync.replicas": str(min(2, rf)),
                       "segment.ms": str(SEGMENT_MS)},
    )
    try:
        response = await admin.create_topics([spec])
    except TopicAlreadyExistsError:
        return
    for topic_error in response.topic_errors:
        code = topic_error[1]
        if code not in (0, TopicAlreadyExistsError.errno):  # another replica winning the race is fine
            raise InfrastructureError(f"cannot create {name}: {for_code(code).__name__} ({topic_error[2:]})")
    log.info("topics_created", topics=[name], partitions=partitions)


async def _grow(admin: AIOKafkaAdminClient, name: str, have: int, wanted: int) -> None:
    try:
        await admin.create_partitions({name: NewPartitions(total_count=wanted)})
    except KafkaError as exc:  # e.g. not authorized, or another replica grew it first
        log.warning("fetch_delayed_grow_failed", topic=name, partitions=have, wanted=wanted, error=repr(exc))
        return
    log.warning("fetch_delayed_grown", topic=name, partitions_before=have, partitions=wanted)


__all__ = ["SEGMENT_MS", "ensure_delayed_topic"]
