"""Publishing verified deliveries to the inbox topic, with acks=all, before any 2xx.

The publisher knows whether Kafka is reachable. After a send fails or times out it answers
:class:`BrokerUnavailable` at once (ingest turns that into 503 + Retry-After, and the provider retries)
until a background probe gets a metadata round trip again — so an outage costs providers one fast
503 per delivery instead of a hung connection each.

Records whose send failed are not left to reach the topic later by surprise: aiokafka never expires
the batches of an idempotent producer (it retries them until the broker is back), so after a failure
the producer is discarded — its sender task cancelled, which fails every queued batch — and a fresh
one is built when Kafka answers again. A record that was already on the wire may still land; the
provider's retry then carries the same delivery id and the processors' dedupe absorbs it
(at-least-once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Histogram

from paystream import metrics
from paystream.config import Settings
from paystream.errors import BrokerUnavailable, InfrastructureError
from paystream.kafka import ensure_topics, make_producer
from paystream.logs import get_logger
from schemas.envelopes import InboxEnvelope

log = get_logger(__name__)

PROBE_INTERVAL_S = 1.0

_MURMUR2_SEED = 0x9747B28C
_MURMUR2_M = 0x5BD1E995
_U32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as an unsigned 32-bit int.

    The same function as ``aiokafka.partitioner.murmur2`` (so the same key lands on the same partition
    as with Java clients), in half the time: whole little-endian words come from ``struct`` and each
    product is masked once. It runs once per published record.
    """
    length = len(data)
    h = _MURMUR2_SEED ^ length
    whole = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * _MURMUR2_M) & _U32
        k ^= k >> 24
        h = ((h * _MURMUR2_M) ^ (k * _MURMUR2_M)) & _U32
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[whole + 2] << 16
        if rest >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _MURMUR2_M) & _U32
    h ^= h >> 13
    h = (h * _MURMUR2_M) & _U32
    return h ^ (h >> 15)


def java_compatible_partition(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's ``DefaultPartitioner`` (Java's for keyed records) with the faster :func:`murmur2`."""
    if key is None:
        return random.choice(available or all_partitions)  # spreading load: no secret involved
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


class InboxPublisher:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self._settings = settings
        self._topic = settings.topics.inbox
        self._timeout_s = settings.kafka.send_timeout_s
        # aiokafka binds a producer to the running loop, so it is built in start() unless given.
        self._producer: AIOKafkaProducer | None = producer
        self._started = False
        self._topics_checked = False
        self._ready = asyncio.Event()
        self._probe_task: asyncio.Task[None] | None = None
        self._closing = False
        self._produce_seconds: Histogram | None = None  # the labelled child, bound on the first ack

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _new_producer(self, **overrides: Any) -> AIOKafkaProducer:
        return make_producer(
            self._settings,
            client_suffix="ingest",
            # batches not sent within the send timeout expire instead of landing after our 503
            request_timeout_ms=int(self._timeout_s * 1000),
            retry_backoff_ms=100,
            partitioner=java_compatible_partition,
            **overrides,
        )

    async def start(self) -> None:
        """Connect in the background: ingest serves (503s) even while Kafka is still down."""
        if self._producer is None:
            self._producer = self._new_producer()
        self._probe_task = asyncio.create_task(self._reconnect_loop(), name="inbox-publisher-probe")

    async def stop(self) -> None:
        self._closing = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self._producer is not None:
            # flush what is in flight: every acknowledged delivery is already on the broker, the rest
            # were answered 503 or are awaiting their ack right now (graceful drain).
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(self._producer.stop(), timeout=self._timeout_s * 2)
        self._set_ready(False)

    async def publish(self, envelopes: Sequence[InboxEnvelope]) -> None:
        """Send every envelope and wait until Kafka acknowledged all of them (acks=all)."""
        producer = self._producer
        if not self.ready or producer is None:
            raise BrokerUnavailable("Kafka is unavailable")
        started = time.perf_counter()
        try:
            # One timeout scope for the sends and their acks; a plain await of the one future a webhook
            # usually has (gather only for batches) — wait_for + gather cost a task and callbacks each.
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await producer.send(self._topic, envelope.to_bytes(), key=envelope.key)
                    for envelope in envelopes
                ]
                if len(futures) == 1:
                    await futures[0]
                else:
                    await asyncio.gather(*futures)
        except (TimeoutError, KafkaError, OSError) as exc:
            await self._mark_broken(exc)
            reason = f"Kafka did not acknowledge within {self._timeout_s}s: {type(exc).__name__}"
            raise BrokerUnavailable(reason) from exc
        if self._produce_seconds is None:
            self._produce_seconds = metrics.PRODUCE_SECONDS.labels(topic="inbox")
        self._produce_seconds.observe(time.perf_counter() - started)

    async def _mark_broken(self, exc: BaseException) -> None:
        if self.ready:
            log.warning("kafka_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
        self._set_ready(False)
        await self._discard_producer()
        if not self._closing and (self._probe_task is None or self._probe_task.done()):
            self._probe_task = asyncio.create_task(self._reconnect_loop(), name="inbox-publisher-probe")

    async def _discard_producer(self) -> None:
        producer, self._producer, started = self._producer, None, self._started
        self._started = False
        if producer is None or not started:
            return
        # The sender task's done-callback fails every batch still queued (aiokafka internals: there is
        # no public way to drop an idempotent producer's queue); stop() then returns without flushing.
        sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
        if sender_task is not None:
            sender_task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=self._timeout_s)

    def _set_ready(self, ready: bool) -> None:
        if ready:
            self._ready.set()
        else:
            self._ready.clear()
        metrics.PRODUCER_READY.set(1 if ready else 0)

    async def _reconnect_loop(self) -> None:
        while not self._closing:
            if self._producer is None:
                self._producer = self._new_producer()
            try:
                await asyncio.wait_for(self._producer.start(), timeout=self._timeout_s * 2)
                self._started = True
                if not self._topics_checked:  # the processes create the topics they need (idempotent)
                    await ensure_topics(self._settings, timeout_s=self._timeout_s * 2)
                    self._topics_checked = True
                await asyncio.wait_for(self._producer.partitions_for(self._topic), self._timeout_s)
                self._set_ready(True)
                log.info("kafka_ready", topic=self._topic)
                return
            except (TimeoutError, KafkaError, OSError, InfrastructureError) as exc:
                log.debug("kafka_probe_failed", error=type(exc).__name__)
                # a producer whose start failed is unusable: drop it and try a fresh one
                self._started = True
                await self._discard_producer()
                await asyncio.sleep(PROBE_INTERVAL_S)
