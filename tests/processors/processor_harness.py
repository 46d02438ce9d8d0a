"""Shared helpers of the processor integration tests: a worker subprocess, producing inbox records and
reading output topics from the real broker."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException

from ingest.providers.routing import delivery_payment_key
from paystream.config import Settings
from paystream.kafka import ensure_topics, make_consumer, make_producer
from processors.settings import ProcessorSettings
from schemas.envelopes import InboxEnvelope, to_rfc3339

WORKER_SCRIPT = Path(__file__).with_name("processor_worker.py")
ROOT = Path(__file__).resolve().parents[2]


async def fresh_settings(base: Settings, *, partitions: int = 3, tag: str = "p") -> Settings:
    """``base`` with topic names no other test uses (every topic, the state topic and the fetcher's own
    included), the public ones already created on the broker."""
    prefix = f"{tag}{uuid.uuid4().hex[:10]}"
    names = ("inbox", "fetch_requests", "fetch_results", "status", "state", "dlq", "fetch_cursors",
             "fetch_delayed")
    topics = base.topics.model_copy(update={
        **{name: f"{prefix}.{getattr(base.topics, name)}" for name in names}, "partitions": partitions})
    settings = base.model_copy(update={"topics": topics})
    await ensure_topics(settings)
    return settings


async def drop_topics(settings: Settings, *app_ids: str) -> None:
    """Delete the topics of a test once it is done (best effort): those of its :func:`fresh_settings` and the
    processors' internal ones (payment inputs, state changelogs) of ``app_ids``. Every Quix worker lists all
    topics of the broker several times while it starts, so a shared broker that keeps every test's topics
    makes every later start slower."""
    from aiokafka.admin import AIOKafkaAdminClient

    from paystream.kafka import connection_options

    topics = settings.topics
    # Only the unique prefixes tests give topics ("p1a2b3c4d5e.payments.inbox.v1"), never a default name.
    prefixes = {name.split(".", 1)[0] + "." for name in (*topics.all_names(), topics.fetch_delayed,
                                                          topics.fetch_cursors)}
    prefixes = {prefix for prefix in prefixes if re.fullmatch(r"[a-z]{1,2}[0-9a-f]{10}\.", prefix)}
    ours = [app_id for app_id in app_ids if app_id.startswith("ps-test-")]
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka), client_id="test-cleanup")
    try:
        await admin.start()
        names = [name for name in await admin.list_topics()
                 if name.startswith(tuple(prefixes)) or any(app_id in name for app_id in ours)]
        if names:
            await admin.delete_topics(names, timeout_ms=10_000)
    except Exception as exc:  # a leftover topic is harmless: the test's outcome stands
        print(f"topics not deleted: {exc!r}")
    finally:
        await admin.close()


def processor_settings(**overrides: Any) -> ProcessorSettings:
    defaults: dict[str, Any] = {"app_id": f"ps-test-{uuid.uuid4().hex[:10]}", "session_timeout_s": 8.0,
                                "freshness_gauges": False}
    return ProcessorSettings(**{**defaults, **overrides})


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start_worker(settings: Settings, conf: ProcessorSettings, log_dir: Path, name: str = "worker", *,
                 client_id: str | None = None, log_level: str = "warning") -> Worker:
    """A worker subprocess with its state under ``log_dir/state``. ``client_id`` (the Kafka client id
    prefix, default the settings') tells workers of one group apart in the group's description
    (:func:`group_assignment`)."""
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    handle = log_path.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    update: dict[str, Any] = {"state_dir": log_dir / "state"}
    if client_id is not None:
        update["kafka"] = settings.kafka.model_copy(update={"client_id": client_id})
    if conf.worker_id is None:  # workers of one test that run at once need their own transactional ids
        conf = conf.model_copy(update={"worker_id": name})
    process = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), settings.model_copy(update=update).model_dump_json(),
         conf.model_dump_json(), log_level],
        stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )
    return Worker(process, log_path)


def inbox_partition(provider: str, account: str, delivery_id: str, partitions: int) -> int:
    """The default partitioner's choice for an inbox key (``provider:account:delivery_id``)."""
    return int(murmur2(f"{provider}:{account}:{delivery_id}".encode()) & 0x7FFFFFFF) % partitions


def delivery_id_in(partition: int, partitions: int, provider: str, account: str, stem: str) -> str:
    """A delivery id starting with ``stem`` whose inbox record lands in ``partition``. The inbox is keyed by
    delivery, so a payment's deliveries spread over partitions, and after a restart the worker may catch up
    on them in any order (the join then merges steps: same final state, fewer events). Tests that compare
    exact event sequences keep a payment's deliveries in one partition, where their order holds."""
    return next(candidate for candidate in (f"{stem}~{n}" for n in itertools.count())
                if inbox_partition(provider, account, candidate, partitions) == partition)


def envelope(provider: str, account: str, delivery_id: str, body: bytes, kind: str = "event") -> InboxEnvelope:
    """As ingest publishes it: keyed by the payment it is about (ingest.providers.routing)."""
    return InboxEnvelope(provider=provider, account=account, delivery_id=delivery_id, kind=kind,  # type: ignore[arg-type]
                         received_at=to_rfc3339(datetime.now(UTC)), body=body,
                         payment_key=delivery_payment_key(provider, account, kind, body, None))  # type: ignore[arg-type]


async def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def trickle(settings: Settings, topic: str, records: Sequence[tuple[bytes | None, bytes]], *, batch: int = 5,
                  pause_s: float = 0.05) -> None:
    """Produce ``records`` in order, ``batch`` at a time with a pause between: a stream still flowing while
    a test kills and restarts the worker."""
    producer = make_producer(settings, client_suffix="test-trickle")
    await producer.start()
    try:
        for start in range(0, len(records), batch):
            for key, value in records[start:start + batch]:
                await producer.send_and_wait(topic, value, key=key)
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def wait_member(settings: Settings, group: str, client_id: str | None = None, *,
                      timeout_s: float = 60.0) -> dict[str, dict[str, set[int]]]:
    """Until consumer group ``group`` has a member (with ``client_id``, a prefix of the member's, when given)
    holding partitions: a worker is past its start-up and in its processing loop. Returns the members."""
    deadline = time.monotonic() + timeout_s
    members: dict[str, dict[str, set[int]]] = {}
    while time.monotonic() < deadline:
        try:
            members = await asyncio.to_thread(group_assignment, settings, group)
        except (TimeoutError, KafkaException):  # a broker busy with a worker's start-up: ask again
            await asyncio.sleep(0.3)
            continue
        if any(held and (client_id is None or member.startswith(client_id)) for member, held in members.items()):
            return members
        await asyncio.sleep(0.3)
    raise AssertionError(f"group {group}: no member {client_id or ''} holding partitions after {timeout_s}s: "
                         f"{members}")


async def send_inbox(settings: Settings, envelopes: list[InboxEnvelope]) -> None:
    await produce(settings, settings.topics.inbox, [(env.key, env.to_bytes()) for env in envelopes])


async def read_until(
    settings: Settings, topic: str, done: Callable[[list[Any]], bool], *, timeout_s: float = 90.0,
    worker: Worker | None = None,
) -> list[Any]:
    """All records of ``topic`` from the beginning, read until ``done(records)``, the timeout, or the
    worker's exit."""
    consumer: AIOKafkaConsumer = make_consumer(settings, group_id=None, client_suffix="test-reader")
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while not done(records) and time.monotonic() < deadline:
            if worker is not None and worker.process.poll() is not None:
                break
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def read_all(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of ``topic`` (read_committed, from the beginning up to the end offsets taken
    first): no fixed wait, and nothing written after the call is included."""
    consumer: AIOKafkaConsumer = make_consumer(settings, group_id=None, client_suffix="test-read-all")
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            assert time.monotonic() < deadline, f"{topic}: not read to its end offsets {ends} in {timeout_s}s"
            batch = await consumer.getmany(*pending, timeout_ms=300)
            for tp, part in batch.items():
                records.extend(record for record in part if record.offset < ends[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return records


def group_assignment(settings: Settings, group: str, *, timeout_s: float = 10.0) -> dict[str, dict[str, set[int]]]:
    """The members of consumer group ``group`` by client id: topic -> partitions each holds (blocking)."""
    from confluent_kafka.admin import AdminClient

    from processors.kafka_client import connection_config

    admin = AdminClient({**connection_config(settings.kafka, client_id="test-admin").as_librdkafka_dict(),
                         "log_level": 4})
    description = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result(timeout_s)
    members: dict[str, dict[str, set[int]]] = {}
    for member in description.members:
        held = members.setdefault(member.client_id, {})
        for tp in member.assignment.topic_partitions:
            held.setdefault(tp.topic, set()).add(tp.partition)
    return members


def events_of(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(record.value) for record in records]


async def wait_a_little() -> None:
    await asyncio.sleep(0.5)


async def wait_drained(settings: Settings, conf: ProcessorSettings, topics: list[str], *,
                       timeout_s: float = 90.0) -> str:
    """Until the worker's consumer group has committed every record of ``topics`` (twice in a row, so a
    stage that was still producing into the next topic is caught). Returns "" when drained, else the lag.

    A topic written in transactions (the processor's internal topic) ends with a commit marker the consumer
    never processes, and may hold aborted records: a partition whose committed offset is behind its end
    counts as drained when no committed record lies between the two."""
    from aiokafka.admin import AIOKafkaAdminClient

    from paystream.kafka import connection_options

    admin = AIOKafkaAdminClient(**connection_options(settings.kafka))
    consumer = make_consumer(settings, group_id=None, client_suffix="test-offsets")
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(settings.topics.partitions)]
        deadline = time.monotonic() + timeout_s
        stable = 0
        lag = "never checked"
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(conf.app_id)
            behind = {f"{tp.topic}/{tp.partition}": (committed[tp].offset if tp in committed else None, ends[tp])
                      for tp in partitions if ends[tp] > 0 and (tp not in committed or committed[tp].offset < ends[tp])
                      and await _records_between(consumer, tp, max(committed[tp].offset, 0) if tp in committed
                                                 else 0, ends[tp])}
            lag = f"committed/end behind: {behind}"
            stable = 0 if behind else stable + 1
            if stable >= 2:
                return ""
            await asyncio.sleep(0.5)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def _records_between(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> bool:
    """Whether ``tp`` holds a committed record in [start, end) (read_committed skips markers and aborts)."""
    consumer.assign([tp])
    consumer.seek(tp, start)
    deadline = time.monotonic() + 10
    while await consumer.position(tp) < end and time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=300)
        if any(record.offset < end for record in batch.get(tp, [])):
            return True
    position: int = await consumer.position(tp)
    return position < end


# --- payloads ------------------------------------------------------------------------------------------


def adyen_item(psp: str, code: str, value: int, *, original: str | None = None, minute: int = 0,
               success: str = "true") -> bytes:
    item: dict[str, Any] = {"pspReference": psp, "merchantAccountCode": "M", "merchantReference": f"order-{psp}",
                            "amount": {"currency": "EUR", "value": value}, "eventCode": code, "success": success,
                            "eventDate": f"2024-05-01T10:{minute:02d}:00+00:00"}
    if original:
        item["originalReference"] = original
    return orjson.dumps(item)


def adyen_lifecycle(payment: str, partitions: int) -> list[InboxEnvelope]:
    """Authorise, capture in full, refund part: three real transitions, the three deliveries in one inbox
    partition (the one the payment's name picks), so their order survives any restart."""
    partition = inbox_partition("adyen", "main", payment, partitions)

    def delivery_id(step: str) -> str:
        return delivery_id_in(partition, partitions, "adyen", "main", f"{payment}:{step}")

    return [
        envelope("adyen", "main", delivery_id("AUTH"), adyen_item(payment, "AUTHORISATION", 1000, minute=1)),
        envelope("adyen", "main", delivery_id("CAP"), adyen_item(f"{payment}C", "CAPTURE", 1000, original=payment,
                                                                 minute=2)),
        envelope("adyen", "main", delivery_id("REF"), adyen_item(f"{payment}R", "REFUND", 300, original=payment,
                                                                 minute=3)),
    ]


EXPECTED_LIFECYCLE = [("authorized", 1000, 0, 0), ("captured", 1000, 1000, 0), ("partially_refunded", 1000, 1000, 300)]


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (data["status"], data["amount"], data["captured_amount"], data["refunded_amount"])


def by_payment(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["subject"], []).append(event)
    for group in grouped.values():
        group.sort(key=lambda e: e["data"]["sequence"])
    return grouped


def stripe_pending_push(pi: str, created: int, account: str = "main") -> InboxEnvelope:
    """A Stripe ``payment_intent.created`` event: the payment is pending (and awaits news)."""
    body = {"id": f"evt_{pi}", "object": "event", "type": "payment_intent.created", "created": created,
            "data": {"object": {"id": pi, "object": "payment_intent", "amount": 1500, "amount_received": 0,
                                "currency": "eur", "status": "requires_payment_method", "created": created}}}
    return envelope("stripe", account, f"evt_{pi}", orjson.dumps(body))
