"""Everything a processor application (one app id) keeps besides the public topics, found and removed by name.

A ``paystream process`` app with id ``A`` (``ProcessorSettings.app_id``) owns:

* its consumer group ``A`` — the committed offsets of the inbox and fetch results (intake) and of the internal
  topic (reconcile);
* the internal topic ``A-payment-inputs`` (``ProcessorSettings.inputs_topic()``: the repartition by payment key);
* the changelog topic(s) of its state stores, named by Quix Streams ``changelog__A--<input topic>--<store>``
  (today one: ``changelog__A--A-payment-inputs--default``) — found by the ``changelog__A--`` prefix rather than
  by a guessed name, so a store added later is found too; likewise ``repartition__A--`` should a stage ever
  use ``group_by``;
* the local RocksDB state under ``Settings.state_dir / "processor" / A`` on every worker's disk.

Losing all of it is a *wipe*: a worker started afterwards begins from the earliest retained inbox and fetch
results with empty state, and ``paystream replay`` from the S3 archive restores what retention dropped. A
rebuild through the processors (:mod:`processors.recovery.rebuild_processors`) removes its temporary app the
same way. The group is deleted first: Kafka refuses while a member is still in it, so a wipe never pulls
topics from under a running worker.

The admin calls go through librdkafka's admin client (the engine's own Kafka client): aiokafka has no
DeleteGroups.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from paystream.config import ProcessorSettings, Settings
from paystream.errors import InfrastructureError
from paystream.logs import get_logger
from processors.kafka_client import connection_config

log = get_logger(__name__)

_REQUEST_TIMEOUT_S = 15.0
_RETRY_S = 0.5


def internal_topic_prefixes(app_id: str) -> tuple[str, ...]:
    """Prefixes of the topics Quix Streams creates for the app (its consumer group is part of the name)."""
    return f"changelog__{app_id}--", f"repartition__{app_id}--"


def is_internal_topic(name: str, conf: ProcessorSettings) -> bool:
    return name == conf.inputs_topic() or name.startswith(internal_topic_prefixes(conf.app_id))


def local_state_dir(settings: Settings, app_id: str) -> Path:
    """Where a worker of ``app_id`` keeps its RocksDB stores: ``processors.topology`` hands Quix Streams
    ``state_dir / "processor"``, and Quix Streams adds the consumer group."""
    return settings.state_dir / "processor" / app_id


@dataclass(slots=True)
class Wiped:
    """What a wipe removed."""

    app_id: str
    group_deleted: bool = False  # False: there was no such group
    topics: list[str] = field(default_factory=list)
    state_dir: Path | None = None  # None: there was no local state


class KafkaAdmin:
    """The few admin operations recovery needs, blocking (callers run them in a thread)."""

    def __init__(self, settings: Settings) -> None:
        config = connection_config(settings.kafka, client_id=f"{settings.kafka.client_id}-recovery-admin")
        self.client = AdminClient(config.as_librdkafka_dict())

    def topics(self) -> list[str]:
        return sorted(self.client.list_topics(timeout=_REQUEST_TIMEOUT_S).topics)

    def delete_topics(self, names: list[str], *, timeout_s: float) -> None:
        """Delete ``names`` and wait until the broker's metadata no longer lists them (deletion is
        asynchronous: a topic recreated too early would come back with its old partitions' data gone but
        deletion still pending)."""
        if not names:
            return
        futures = self.client.delete_topics(names, operation_timeout=_REQUEST_TIMEOUT_S)
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise InfrastructureError(f"cannot delete topic {name}: {exc}") from exc
        _until(lambda: not set(names) & set(self.topics()), timeout_s,
               f"topics still listed {timeout_s:.0f} s after their deletion: {names}")

    def delete_group(self, group: str, *, timeout_s: float) -> bool:
        """True once deleted; False when there was no such group. Retries while the group still has
        members (a worker that died without leaving stays a member until its session times out)."""
        deadline = time.monotonic() + timeout_s
        while True:
            future = self.client.delete_consumer_groups([group], request_timeout=_REQUEST_TIMEOUT_S)[group]
            try:
                future.result()
                return True
            except KafkaException as exc:
                code = exc.args[0].code()
                if code == KafkaError.GROUP_ID_NOT_FOUND:
                    return False
                if code != KafkaError.NON_EMPTY_GROUP:
                    raise InfrastructureError(f"cannot delete consumer group {group}: {exc}") from exc
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"consumer group {group} still has members after {timeout_s:.0f} s: stop every worker of "
                    "this app id first (a killed worker leaves the group when its session times out)"
                )
            time.sleep(_RETRY_S)


def _until(done: Callable[[], bool], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise InfrastructureError(message)
        time.sleep(_RETRY_S)


def owned_topics(names: Iterable[str], conf: ProcessorSettings) -> list[str]:
    return sorted(name for name in names if is_internal_topic(name, conf))


def wipe_app_state_blocking(settings: Settings, conf: ProcessorSettings, *, timeout_s: float = 60.0) -> Wiped:
    admin = KafkaAdmin(settings)
    wiped = Wiped(conf.app_id)
    wiped.group_deleted = admin.delete_group(conf.app_id, timeout_s=timeout_s)
    wiped.topics = owned_topics(admin.topics(), conf)
    admin.delete_topics(wiped.topics, timeout_s=timeout_s)
    local = local_state_dir(settings, conf.app_id)
    if local.exists():
        shutil.rmtree(local)
        wiped.state_dir = local
    log.info("processor_state_wiped", app_id=conf.app_id, group_deleted=wiped.group_deleted, topics=wiped.topics,
             state_dir=str(wiped.state_dir) if wiped.state_dir else None)
    return wiped


async def wipe_app_state(settings: Settings, conf: ProcessorSettings, *, timeout_s: float = 60.0) -> Wiped:
    """Delete the app's consumer group, then its internal and changelog topics, then its local state under
    ``settings.state_dir`` (this machine's only: other workers' disks are theirs to clear). Every worker of
    the app must be stopped first."""
    return await asyncio.to_thread(wipe_app_state_blocking, settings, conf, timeout_s=timeout_s)
