"""``paystream fetch``: the Kafka side of the fetcher.

Flow: consume ``fetch.requests`` → :class:`FetchEngine` (not-before heap, per-account workers) → publish
the result on ``fetch.results`` (or re-publish the request for a retry on ``fetch.requests``) with
acks=all → only then mark the request's offset done; a commit loop commits, per partition, up to the
oldest request still in progress.

A request due later than ``delayed_threshold_s`` takes a detour through the durable delayed store
(ingest/fetch/delayed.py): its offset is done once the store committed it, so a poll scheduled hours
ahead neither holds back the commit of the requests behind it nor is lost by a restart. A partition is
consumed only once its store partition is loaded (it stays paused meanwhile).

Hints are admitted by ingest/fetch/hints.py: coalesced per object, at most ``hints_per_account`` held per
account, the rest left waiting in the topic (read again later) without pausing anyone else's requests.

Retries are re-published, not retried in place: a provider that fails for an hour then holds no offsets
back (other providers' progress keeps being committed) and the pending retry survives a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from functools import partial

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from ingest.fetch.backoff import full_jitter_delay
from ingest.fetch.clients import Lanes, build_lanes
from ingest.fetch.cursors import CursorStore, cursor_topic_for
from ingest.fetch.delayed import DelayedStore, due_at
from ingest.fetch.engine import FetchEngine
from ingest.fetch.hints import HintDesk
from ingest.fetch.lane import Decision
from ingest.fetch.offsets import OffsetTracker
from ingest.fetch.options import FetchOptions
from ingest.fetch.sweep import StripeEventSweep
from paystream.config import Settings
from paystream.dlq import dlq_headers, reason_of
from paystream.errors import NormalizationError
from paystream.kafka import ensure_topics, make_consumer, make_producer
from paystream.logs import get_logger
from paystream.metrics import DLQ
from paystream.probes import probe_server
from schemas.envelopes import FetchRequest, FetchResult

log = get_logger(__name__)


class KafkaDecisionSink:
    """Publishes decisions with acks=all, retrying Kafka until it answers or the fetcher stops."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings, stop: asyncio.Event) -> None:
        self._producer = producer
        self._topics = settings.topics
        self._stop = stop

    async def deliver(self, decision: Decision) -> None:
        if decision.result is not None:
            await self._send(self._topics.fetch_results, decision.result.key, decision.result.to_bytes())
        elif decision.retry is not None:
            await self._send(self._topics.fetch_requests, decision.retry.key, decision.retry.to_bytes())

    async def publish_results(self, results: list[FetchResult]) -> None:
        futures = [
            await self._producer.send(self._topics.fetch_results, key=r.key, value=r.to_bytes()) for r in results
        ]
        await asyncio.gather(*futures)

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._producer.send_and_wait(topic, key=key, value=value)
                return
            except KafkaError as exc:
                if self._stop.is_set():
                    raise
                delay = full_jitter_delay(attempt, base_s=0.5, cap_s=10.0)
                log.warning("fetch_publish_retry", topic=topic, error=repr(exc), delay_s=round(delay, 2))
                await asyncio.sleep(delay)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, fetcher: _Fetcher) -> None:
        self._fetcher = fetcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Store writes under way are acknowledged first, so their offsets are part of this last commit.
        if self._fetcher.delayed is not None:
            await self._fetcher.delayed.revoke(tp.partition for tp in revoked)
        await self._fetcher.commit(only=set(revoked))  # not past a hint left in the topic
        if self._fetcher.hints is not None:
            self._fetcher.hints.forget(revoked)
        self._fetcher.tracker.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing of these partitions is consumed before their delayed entries are loaded: a request read
        # earlier could be overwritten in memory by an older value of its key still being loaded.
        self._fetcher.consumer.pause(*assigned)
        if self._fetcher.delayed is not None:
            self._fetcher.delayed.assign(tp.partition for tp in assigned)
        log.info("fetch_partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


class _Fetcher:
    def __init__(
        self, settings: Settings, stop: asyncio.Event, options: FetchOptions, ready: asyncio.Event | None = None
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.options = options
        self.tracker = OffsetTracker()
        self.producer = make_producer(settings, client_suffix="fetch")
        self.consumer: AIOKafkaConsumer = make_consumer(
            settings, group_id=options.group_id, client_suffix="fetch", max_poll_records=500
        )
        self.sink = KafkaDecisionSink(self.producer, settings, stop)
        self.lanes: Lanes | None = None
        self.engine: FetchEngine | None = None
        self.delayed: DelayedStore | None = None
        self.hints: HintDesk | None = None
        self.cursors: CursorStore | None = None
        self.sweeps: list[StripeEventSweep] = []
        self.ready = ready or asyncio.Event()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = self.tracker.committable()
        assigned = self.consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned and (only is None or tp in only)}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
            self.tracker.committed(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("fetch_commit_failed", error=repr(exc))

    async def run(self) -> None:
        self.lanes = build_lanes(self.settings, self.options)
        self.engine = FetchEngine(self.lanes.by_account, self.sink, self.options, fallback_lane=self.lanes.unsupported)
        await self.producer.start()
        background: list[asyncio.Task[None]] = []
        try:
            self.delayed = DelayedStore(self.settings, self.options, self.engine)
            await self.delayed.start()
            self.hints = HintDesk(self.settings, self.options, self.engine, self.tracker)
            await self.hints.start()
            self.consumer.subscribe([self.settings.topics.fetch_requests], listener=_Rebalance(self))
            await self.consumer.start()
            await self._start_sweeps()
            self.engine.start()
            log.info("fetcher_started", accounts=sorted(f"{p}:{a}" for p, a in self.lanes.by_account))
            self.ready.set()
            sweeping = asyncio.create_task(self._sweep_loop(), name="fetch-sweeps")
            background = [sweeping, asyncio.create_task(self._commit_loop(), name="fetch-commits")]
            await self._consume_loop()
            # Graceful stop: the sweep round under way finishes, calls in flight finish and publish.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sweeping), self.options.shutdown_grace_s)
            await self.engine.stop()
            await self.delayed.drain(self.options.shutdown_grace_s)  # store writes and tombstones under way
            await self.commit()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.engine.stop()  # no-op after a graceful stop; frees the workers after a crash
            await self.consumer.stop()
            if self.hints is not None:
                await self.hints.close()
            if self.delayed is not None:
                await self.delayed.close()
            if self.cursors is not None:
                await self.cursors.close()
            await self.producer.stop()
            await self.lanes.close()
            log.info("fetcher_stopped")

    async def _consume_loop(self) -> None:
        assert self.delayed is not None
        while not self.stop.is_set():
            self._pause_or_resume()
            batches = await self.consumer.getmany(timeout_ms=200, max_records=500)
            for tp, records in batches.items():
                for record in records:
                    if not self.delayed.ready(tp.partition):
                        break  # revoked while this batch was handled: its next owner reads the rest
                    await self._accept(tp, record)

    def _pause_or_resume(self) -> None:
        """All partitions pause while the engine is full; a partition whose delayed store is still loading
        stays paused anyway."""
        assert self.engine is not None and self.delayed is not None
        assignment = self.consumer.assignment()
        if self.engine.room.is_set():
            hold = {tp for tp in assignment if not self.delayed.ready(tp.partition)}
        else:
            hold = set(assignment)
        paused = self.consumer.paused()
        if hold - paused:
            self.consumer.pause(*(hold - paused))
        if (paused & assignment) - hold:
            self.consumer.resume(*((paused & assignment) - hold))

    async def _accept(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        assert self.engine is not None and self.delayed is not None and self.hints is not None
        offset = record.offset
        try:
            request = FetchRequest.from_bytes(record.value or b"")
            due_at(request)  # a not-before that is no time is malformed too
        except NormalizationError as exc:
            await self._dead_letter(tp, record, exc)
            self.tracker.add(tp, offset)
            return
        if self.delayed.wants(tp.partition, request):
            # Done (committable) once the store committed it, long before it is due.
            self.tracker.pending(tp, offset)
            await self.delayed.hold(tp.partition, offset, request, partial(self.tracker.done, tp, offset))
            return
        if self.hints.admit(tp, offset, request):
            return
        job = self.engine.submit(request)
        job.on_done = partial(self.tracker.done, tp, offset)
        self.tracker.add(tp, offset, job)

    async def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """The record unchanged (key, value, headers) plus the same error headers the processors write."""
        log.error("fetch_request_malformed", partition=tp.partition, offset=record.offset, error=str(exc))
        headers = dlq_headers(list(record.headers or ()), error=exc, topic=tp.topic, partition=tp.partition,
                              offset=record.offset, now=datetime.now(UTC))
        await self.producer.send_and_wait(self.settings.topics.dlq, key=record.key, value=record.value or b"",
                                          headers=headers)
        DLQ.labels(tp.topic, reason_of(exc)).inc()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.commit_interval_s)
            await self.commit()

    async def _start_sweeps(self) -> None:
        assert self.lanes is not None
        if not (self.options.stripe_sweeps and self.lanes.stripe):
            return
        self.cursors = CursorStore(
            self.settings, cursor_topic_for(self.settings), self.producer
        )
        await self.cursors.start()
        for account, client in sorted(self.lanes.stripe.items()):
            for name in self.options.stripe_sweeps:
                self.sweeps.append(
                    StripeEventSweep(
                        name,
                        account,
                        client,
                        self.lanes.by_account[("stripe", account)],
                        self.cursors,
                        self.sink.publish_results,
                        self.options,
                    )
                )

    def _leads_sweeps(self) -> bool:
        # One sweeper among the replicas: whoever owns partition 0 of the requests topic.
        return TopicPartition(self.settings.topics.fetch_requests, 0) in self.consumer.assignment()

    async def _sweep_loop(self) -> None:
        if not self.sweeps or self.cursors is None:
            return
        while not self.stop.is_set():
            if self._leads_sweeps():
                await self.cursors.refresh()
                for sweep in self.sweeps:
                    if self.stop.is_set():
                        break
                    try:
                        count = await sweep.run_once()
                        if count:
                            log.info("sweep_published", sweep=sweep.key, events=count)
                    except Exception:
                        log.exception("sweep_failed", sweep=sweep.key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.options.sweep_interval_s)


async def run_fetcher(
    settings: Settings, stop: asyncio.Event, options: FetchOptions | None = None, ready: asyncio.Event | None = None
) -> None:
    """Run the fetcher until ``stop`` is set, then finish in-flight calls, commit and close.

    ``ready`` is set once the fetcher is connected and consuming (its /readyz).
    """
    await _Fetcher(settings, stop, options or settings.fetch, ready).run()


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The ``paystream fetch`` subcommand: fetch until SIGINT / SIGTERM, then drain and stop."""

    async def fetch_until_signalled() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await ensure_topics(settings)
        async with probe_server(settings, ready.is_set):
            await run_fetcher(settings, stop, ready=ready)

    asyncio.run(fetch_until_signalled())
    return 0
