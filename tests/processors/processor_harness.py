"""Shared helpers of the processor integration tests: a worker subprocess, producing inbox records and
reading output topics from the real broker."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from paystream.config import Settings
from paystream.kafka import make_consumer, make_producer
from processors.settings import ProcessorSettings
from schemas.envelopes import InboxEnvelope, to_rfc3339

WORKER_SCRIPT = Path(__file__).with_name("processor_worker.py")
ROOT = Path(__file__).resolve().parents[2]


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


def start_worker(settings: Settings, conf: ProcessorSettings, log_dir: Path, name: str = "worker") -> Worker:
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    handle = log_path.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT),
         settings.model_copy(update={"state_dir": log_dir / "state"}).model_dump_json(), conf.model_dump_json()],
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
    return InboxEnvelope(provider=provider, account=account, delivery_id=delivery_id, kind=kind,  # type: ignore[arg-type]
                         received_at=to_rfc3339(datetime.now(UTC)), body=body)


async def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = make_producer(settings, client_suffix="test")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


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


def events_of(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(record.value) for record in records]


async def wait_a_little() -> None:
    await asyncio.sleep(0.5)


async def wait_drained(settings: Settings, conf: ProcessorSettings, topics: list[str], *,
                       timeout_s: float = 90.0) -> str:
    """Until the worker's consumer group has committed every record of ``topics`` (twice in a row, so a
    stage that was still producing into the next topic is caught). Returns "" when drained, else the lag."""
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
                      for tp in partitions if ends[tp] > 0 and (tp not in committed or committed[tp].offset < ends[tp])}
            lag = f"committed/end behind: {behind}"
            stable = 0 if behind else stable + 1
            if stable >= 2:
                return ""
            await asyncio.sleep(0.5)
        return lag
    finally:
        await consumer.stop()
        await admin.close()
